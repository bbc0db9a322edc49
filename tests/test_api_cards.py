"""Card detail with comments and history, and verification on demand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from app.api import schemas
from app.models.base import load_json
from app.models.runtime import Event, Issue
from tests.api_support import add_card, add_comment, add_history, at

DEMO_FIXTURE = Path(__file__).resolve().parent.parent / "app/assets/verification/demo"
VERIFICATION = {
    "fixture_path": "verification/demo/calc_fixture.py",
    "scenarios": [
        {
            "id": "S1",
            "description": "2 + 3",
            "input_data": {"a": 2, "b": 3},
            "expected_output": 5,
        },
        {
            "id": "S2",
            "description": "1 + 1",
            "input_data": {"a": 1, "b": 1},
            "expected_output": 2,
        },
    ],
}


def test_card_detail_has_comments_and_history_oldest_first(
    client, auth_headers, runtime_db
):
    add_card(
        runtime_db,
        "DEMO-1",
        status="code_review",
        priority="3.0",
        depends_on_json='["X"]',
    )
    add_comment(runtime_db, "DEMO-1", "builder", "second", at(2))
    add_comment(runtime_db, "DEMO-1", "verifier", "first", at(1))
    add_history(runtime_db, "DEMO-1", "in_progress", "code_review", at(4))
    add_history(runtime_db, "DEMO-1", "ready", "in_progress", at(3))

    response = client.get("/v1/cards/DEMO-1", headers=auth_headers)

    assert response.status_code == 200
    body = response.get_json()
    schemas.CardDetailOut.model_validate(body)
    assert body["priority"] == 3.0
    assert body["depends_on"] == ["X"]
    assert [c["content"] for c in body["comments"]] == ["first", "second"]
    assert set(body["comments"][0]) == {"id", "author", "content", "created_at"}
    assert [(h["from_status"], h["to_status"]) for h in body["history"]] == [
        ("ready", "in_progress"),
        ("in_progress", "code_review"),
    ]
    assert body["history"][0] == {
        "timestamp": "2026-03-02T10:03:00.000000+00:00",
        "role": "system",
        "action": "Set Status to 'in_progress'",
        "from_status": "ready",
        "to_status": "in_progress",
    }


def test_card_ids_with_a_build_suffix_work_in_the_url(client, auth_headers, runtime_db):
    add_card(runtime_db, "DEMO-1@demo-a", build_id="demo-a")

    response = client.get("/v1/cards/DEMO-1@demo-a", headers=auth_headers)

    assert response.get_json()["id"] == "DEMO-1@demo-a"


def test_unknown_card_is_404(client, auth_headers):
    for response in (
        client.get("/v1/cards/NOPE-1", headers=auth_headers),
        client.post("/v1/cards/NOPE-1/verify", headers=auth_headers),
    ):
        assert response.status_code == 404
        assert response.get_json() == {"detail": "Not Found"}


# Verify -------------------------------------------------------------------------------


@pytest.fixture
def fixture_installed(settings):
    shutil.copytree(DEMO_FIXTURE, settings.verification_root / "demo")


def write_calc(settings, body: str, build: str = "build-demo") -> None:
    path = settings.builds_root / build / "agent_output" / "calc.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def test_verify_runs_the_fixture_now_and_stores_the_result(
    client, auth_headers, runtime_db, settings, fixture_installed
):
    add_card(runtime_db, "DEMO-1", verification=VERIFICATION)
    write_calc(settings, "def add(a, b):\n    return a + b if a != 1 else 0\n")

    response = client.post("/v1/cards/DEMO-1/verify", headers=auth_headers)

    assert response.status_code == 200
    body = schemas.VerifyOut.model_validate(response.get_json())
    assert body.card_id == "DEMO-1"
    result = response.get_json()["result"]
    assert (result["total_scenarios"], result["passed"], result["failed"]) == (2, 1, 1)
    assert result["fatal"] is False
    assert "  [FAIL] Expected 2, got 0" in result["logs"]
    with runtime_db.reader() as session:
        card = session.get(Issue, "DEMO-1")
        names = list(
            session.scalars(select(Event.event).where(Event.card_id == "DEMO-1"))
        )
    stored = load_json(card.verification_json, {})
    assert stored["last_run"] == result
    assert [
        (s["id"], s["status"], s["actual_output"]) for s in stored["scenarios"]
    ] == [
        ("S1", "pass", 5),
        ("S2", "fail", 0),
    ]
    assert stored["fixture_path"] == VERIFICATION["fixture_path"]
    assert names == ["verification_started", "verification_completed"]


def test_verify_uses_the_cards_own_build_workspace(
    client, auth_headers, runtime_db, settings, fixture_installed
):
    add_card(runtime_db, "DEMO-1@b2", build_id="b2", verification=VERIFICATION)
    write_calc(settings, "def add(a, b):\n    return a + b\n", build="b2")
    write_calc(settings, "def add(a, b):\n    return 0\n")

    result = client.post("/v1/cards/DEMO-1@b2/verify", headers=auth_headers).get_json()[
        "result"
    ]

    assert result["passed"] == 2


def test_a_missing_fixture_file_is_a_fatal_result_not_an_error(
    client, auth_headers, runtime_db
):
    add_card(runtime_db, "DEMO-1", verification=VERIFICATION)

    response = client.post("/v1/cards/DEMO-1/verify", headers=auth_headers)

    assert response.status_code == 200
    result = response.get_json()["result"]
    assert result["fatal"] is True
    assert result["failed"] == 2
    assert (
        "ERROR: Fixture file not found at verification/demo/calc_fixture.py"
        in result["logs"]
    )


@pytest.mark.parametrize(
    "verification", [None, {"scenarios": []}, {"fixture_path": "", "scenarios": []}]
)
def test_a_card_without_a_fixture_is_409(
    client, auth_headers, runtime_db, verification
):
    add_card(runtime_db, "DEMO-2", verification=verification)

    response = client.post("/v1/cards/DEMO-2/verify", headers=auth_headers)

    assert response.status_code == 409
    assert response.get_json() == {"detail": "Card has no verification fixture"}


def test_a_fixture_path_outside_the_verification_root_reports_a_violation(
    client, auth_headers, runtime_db, settings
):
    escaping = {**VERIFICATION, "fixture_path": "verification/../builds/evil.py"}
    add_card(runtime_db, "DEMO-1", verification=escaping)

    response = client.post("/v1/cards/DEMO-1/verify", headers=auth_headers)

    result = response.get_json()["result"]
    assert result["fatal"] is True
    assert result["fatal_error"].startswith("SECURITY VIOLATION")
    assert str(settings.data_path) not in json.dumps(response.get_json())
