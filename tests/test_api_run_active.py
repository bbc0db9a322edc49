"""`POST /v1/system/run-active` (API-8): every outcome."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from app.models.base import load_json
from app.models.runtime import Event, Session
from tests.api_support import add_card, add_run, write_asset

ALPHA = {
    "name": "Alpha",
    "team": "demo_team",
    "environment": "demo",
    "issues": [
        {"id": "ALPHA-X", "summary": "Has an explicit id", "seat": "builder"},
        {"summary": "Has a derived id", "seat": "builder"},
    ],
}


@pytest.fixture
def assets(settings):
    config = settings.config_path
    write_asset(config, "epics/alpha.json", ALPHA)
    write_asset(
        config, "rocks/launch.json", {"epics": [{"epic": "alpha"}, {"epic": "demo"}]}
    )
    write_asset(config, "epics/broken.json", {"name": "no team or environment"})
    write_asset(
        settings.model_path,
        "eng/epics/beta.json",
        {"team": "demo_team", "environment": "demo", "issues": []},
    )
    return config


def run_active(client, headers, body):
    return client.post("/v1/system/run-active", json=body, headers=headers)


def stored_run(db, run_id: str) -> Session:
    with db.reader() as session:
        row = session.get(Session, run_id)
    assert row is not None
    return row


def test_the_spec_example_queues_the_demo_epic_in_its_build(
    client, auth_headers, runtime_db
):
    response = run_active(
        client,
        auth_headers,
        {"path": "model/core/epics/demo.json", "build_id": "demo-a"},
    )

    assert response.status_code == 202
    body = response.get_json()
    assert re.fullmatch(r"[0-9a-f]{8}", body["session_id"])
    assert body == {
        "session_id": body["session_id"],
        "status": "queued",
        "build_id": "demo-a",
    }
    row = stored_run(runtime_db, body["session_id"])
    assert (row.type, row.target_id, row.status, row.source) == (
        "epic",
        "demo",
        "queued",
        "api",
    )
    assert load_json(row.builds_json, []) == ["demo-a"]
    with runtime_db.reader() as session:
        event = session.scalars(select(Event).where(Event.event == "run_queued")).one()
    assert json.loads(event.data)["run_id"] == body["session_id"]


def test_an_epic_without_build_id_uses_its_default_build(client, auth_headers, assets):
    response = run_active(client, auth_headers, {"path": "config/epics/alpha.json"})

    assert response.status_code == 202
    assert response.get_json()["build_id"] == "build-alpha"


def test_a_rock_runs_its_epics_builds(client, auth_headers, assets, runtime_db):
    response = run_active(client, auth_headers, {"path": "config/rocks/launch.json"})

    assert response.status_code == 202
    assert response.get_json()["build_id"] == "rock-build-launch"
    row = stored_run(runtime_db, response.get_json()["session_id"])
    assert row.type == "rock"
    assert load_json(row.builds_json, []) == ["build-alpha", "build-demo"]


def test_a_card_in_the_database_runs_in_its_build(
    client, auth_headers, assets, runtime_db
):
    add_card(runtime_db, "CARD-9", build_id="build-x", epic_id="alpha")

    response = run_active(client, auth_headers, {"issue_id": "CARD-9"})

    assert response.status_code == 202
    assert response.get_json()["build_id"] == "build-x"
    row = stored_run(runtime_db, response.get_json()["session_id"])
    assert (row.type, row.target_id) == ("issue", "CARD-9")


@pytest.mark.parametrize(
    "body, target, build",
    [
        ({"issue_id": "ALPHA-X"}, "ALPHA-X", "build-alpha"),
        ({"issue_id": "ALPHA-2"}, "ALPHA-2", "build-alpha"),
        ({"issue_id": "ALPHA-2", "build_id": "b2"}, "ALPHA-2@b2", "b2"),
    ],
)
def test_issues_of_an_epic_by_explicit_and_derived_id(
    client, auth_headers, assets, runtime_db, body, target, build
):
    response = run_active(client, auth_headers, body)

    assert response.status_code == 202
    assert response.get_json()["build_id"] == build
    row = stored_run(runtime_db, response.get_json()["session_id"])
    assert (row.type, row.target_id) == ("issue", target)


def test_the_department_comes_from_the_path(client, auth_headers, assets, runtime_db):
    response = run_active(client, auth_headers, {"path": "model/eng/epics/beta.json"})

    assert response.status_code == 202
    assert stored_run(runtime_db, response.get_json()["session_id"]).department == "eng"


def test_unknown_target_is_404(client, auth_headers, assets):
    response = run_active(client, auth_headers, {"issue_id": "NOPE-1"})

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Card NOPE-1 not found."}


def test_type_limits_the_resolution(client, auth_headers, assets):
    response = run_active(client, auth_headers, {"issue_id": "alpha", "type": "rock"})

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Card alpha not found."}


def test_an_active_run_on_the_build_is_409(client, auth_headers, assets):
    first = run_active(client, auth_headers, {"path": "config/epics/alpha.json"})
    second = run_active(client, auth_headers, {"issue_id": "ALPHA-X"})

    run_id = first.get_json()["session_id"]
    assert second.status_code == 409
    assert second.get_json() == {
        "detail": f"Build build-alpha already has an active run {run_id}"
    }


def test_a_rock_conflicts_with_a_running_run_on_one_of_its_builds(
    client, auth_headers, assets, runtime_db
):
    add_run(runtime_db, "abcd1234", status="running", builds=["build-demo"])

    response = run_active(client, auth_headers, {"path": "config/rocks/launch.json"})

    assert response.status_code == 409
    assert response.get_json() == {
        "detail": "Build build-demo already has an active run abcd1234"
    }


def test_a_finished_run_does_not_conflict(client, auth_headers, assets, runtime_db):
    add_run(runtime_db, "abcd1234", status="done", builds=["build-alpha"])

    assert (
        run_active(
            client, auth_headers, {"path": "config/epics/alpha.json"}
        ).status_code
        == 202
    )


def test_an_invalid_asset_is_422(client, auth_headers, assets):
    response = run_active(client, auth_headers, {"path": "config/epics/broken.json"})

    assert response.status_code == 422
    assert response.get_json()["detail"].startswith("Asset broken is invalid: ")


@pytest.mark.parametrize("build_id", ["../escape", "a b", "x" * 65, ""])
def test_a_bad_build_id_is_422(client, auth_headers, assets, build_id):
    response = run_active(
        client, auth_headers, {"path": "config/epics/alpha.json", "build_id": build_id}
    )

    assert response.status_code == 422


def test_a_bad_type_is_422_with_its_location(client, auth_headers, assets):
    response = run_active(client, auth_headers, {"issue_id": "alpha", "type": "saga"})

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["body", "type"]


@pytest.mark.parametrize("body", [{}, {"path": ""}, {"issue_id": "  "}, {"unknown": 1}])
def test_no_asset_id_is_400(client, auth_headers, body):
    response = run_active(client, auth_headers, body)

    assert response.status_code == 400
    assert response.get_json() == {"detail": "No asset ID provided."}


def test_a_missing_or_broken_body_is_422(client, auth_headers):
    missing = client.post("/v1/system/run-active", headers=auth_headers)
    broken = client.post(
        "/v1/system/run-active",
        data="{not json",
        headers={**auth_headers, "Content-Type": "application/json"},
    )

    assert missing.status_code == 422
    assert missing.get_json()["detail"][0]["type"] == "missing"
    assert broken.status_code == 422
    assert broken.get_json()["detail"][0] == {
        "loc": ["body"],
        "msg": "JSON decode error",
        "type": "json_invalid",
    }
