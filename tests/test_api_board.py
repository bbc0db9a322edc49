"""Board and asset previews (API-10), over the real Orket `model/` tree and over
small trees written by the tests."""

from __future__ import annotations

import pytest

from app.api import schemas
from app.engine.assets import AssetStore
from tests.api_support import add_card, write_asset
from tests.conftest import ORKET_MODEL_TREE


@pytest.fixture
def real_tree(settings_factory):
    """Settings pointing at the real tree: its config/ and model/ folders."""
    return settings_factory(
        config_dir=ORKET_MODEL_TREE / "config", model_dir=ORKET_MODEL_TREE / "model"
    )


@pytest.fixture
def real_client(real_tree):
    from app import create_app

    flask_app = create_app(real_tree)
    yield flask_app.test_client()
    flask_app.extensions["orket"].stop()


def board(client, headers, dept=None):
    query = {} if dept is None else {"dept": dept}
    return client.get("/v1/system/board", query_string=query, headers=headers)


def preview(client, headers, path, issue_id=None):
    query = {"path": path} if issue_id is None else {"path": path, "issue_id": issue_id}
    return client.get("/v1/system/preview-asset", query_string=query, headers=headers)


def by_id(entries):
    return {entry["id"]: entry for entry in entries}


# The real tree ------------------------------------------------------------------------


def test_core_board_of_the_real_tree(real_client, auth_headers):
    response = board(real_client, auth_headers)

    assert response.status_code == 200
    body = response.get_json()
    schemas.BoardOut.model_validate(body)
    genesis = by_id(body["rocks"])["initialize_orket"]
    assert genesis["name"].startswith("System Genesis")
    assert genesis["status"] == "in_progress"
    epics = by_id(genesis["epics"])
    assert set(epics) == {"core_baseline", "model_reforge"}
    baseline_issues = epics["core_baseline"]["issues"]
    assert [i["id"] for i in baseline_issues] == [
        "CORE_BASELINE-1",
        "CORE_BASELINE-2",
        "CORE_BASELINE-3",
    ]
    assert (
        baseline_issues[0]["name"]
        == "Verify hardware profile and update engine settings."
    )
    assert baseline_issues[0]["seat"] == "lead_architect"
    assert {i["runtime_status"] for i in baseline_issues} == {None}


def test_real_tree_alerts_report_what_the_loader_cannot_use(real_client, auth_headers):
    core = board(real_client, auth_headers).get_json()
    creative = board(real_client, auth_headers, "creative").get_json()

    core_messages = [alert["message"] for alert in core["alerts"]]
    assert any(
        m.startswith("epics/price_arbitrage_system: unknown list 'lessons_learned'")
        for m in core_messages
    )
    active = [a for a in core["alerts"] if "status 'active'" in a["message"]]
    assert active and active[0]["type"] == "info"
    tracs = [a for a in creative["alerts"] if "unknown list 'tracs'" in a["message"]]
    assert len(tracs) == 3 and {a["type"] for a in tracs} == {"warning"}
    for alert in core["alerts"] + creative["alerts"]:
        assert str(ORKET_MODEL_TREE) not in alert["message"]


def test_a_rock_naming_a_missing_epic_shows_it_in_place(real_client, auth_headers):
    body = board(real_client, auth_headers).get_json()

    entries = [e for rock in body["rocks"] for e in rock["epics"] if "error" in e]
    assert {
        "id": "sneaky_price_watch_refinement",
        "name": "sneaky_price_watch_refinement",
        "error": "No epic 'sneaky_price_watch_refinement' for department 'core'",
    } in entries


def test_the_packaged_demo_epic_is_an_orphan_of_core(real_client, auth_headers):
    body = board(real_client, auth_headers).get_json()

    assert [e["id"] for e in body["orphaned_epics"]] == ["EPIC-DEMO"]
    assert body["alerts"][0] == {
        "type": "error",
        "message": "Structure Alert: 1 Orphan Epics, 0 Orphaned Issues.",
        "action_required": body["alerts"][0]["action_required"],
    }
    assert body["alerts"][0]["action_required"]


def test_epics_referenced_by_another_departments_rock_are_not_orphans(
    real_client, auth_headers
):
    engineering = board(real_client, auth_headers, "engineering").get_json()

    assert engineering["orphaned_epics"] == []
    assert not [a for a in engineering["alerts"] if a["type"] == "error"]


def test_every_department_of_the_real_tree_has_a_board(
    real_client, auth_headers, real_tree
):
    for department in AssetStore(real_tree).departments():
        assert board(real_client, auth_headers, department).status_code == 200


def test_unknown_department_is_404(real_client, auth_headers):
    for dept in ("nope", "../core", ".hidden"):
        response = board(real_client, auth_headers, dept)
        assert response.status_code == 404
        assert response.get_json() == {"detail": "Department not found"}


# Small trees --------------------------------------------------------------------------


def test_runtime_status_is_the_card_status_in_the_default_build(
    client, auth_headers, runtime_db
):
    add_card(runtime_db, "DEMO-1", build_id="build-demo", status="code_review")
    add_card(runtime_db, "DEMO-2", build_id="other-build", status="done")

    body = board(client, auth_headers).get_json()

    demo = by_id(body["orphaned_epics"])["EPIC-DEMO"]
    statuses = {i["id"]: i["runtime_status"] for i in demo["issues"]}
    assert statuses == {"DEMO-1": "code_review", "DEMO-2": None}


def test_orphaned_issues_invalid_epics_and_artifacts(client, auth_headers, settings):
    model = settings.model_path
    write_asset(
        model, "ops/epics/good.json", {"team": "demo_team", "environment": "demo"}
    )
    write_asset(model, "ops/epics/bad.json", "{not json")
    write_asset(model, "ops/rocks/r.json", {"name": "R", "epics": [{"epic": "bad"}]})
    write_asset(model, "ops/issues/loose.json", {"summary": "A loose issue"})
    write_asset(model, "ops/artifacts/diagram.png", "png")

    body = board(client, auth_headers, "ops").get_json()

    assert body["rocks"][0]["epics"][0]["id"] == "bad"
    assert body["rocks"][0]["epics"][0]["error"].startswith("Asset bad is invalid: ")
    assert [e["id"] for e in body["orphaned_epics"]] == ["good"]
    assert body["orphaned_issues"] == [
        {"summary": "A loose issue", "id": "loose", "name": "A loose issue"}
    ]
    assert body["artifacts"] == ["diagram.png"]
    assert (
        body["alerts"][0]["message"]
        == "Structure Alert: 1 Orphan Epics, 1 Orphaned Issues."
    )


def test_board_defaults_to_core(client, auth_headers):
    body = board(client, auth_headers).get_json()

    assert "EPIC-DEMO" in by_id(body["orphaned_epics"])


# Preview ------------------------------------------------------------------------------


def test_preview_of_an_epic_sequences_its_issues_with_prompts(client, auth_headers):
    response = preview(client, auth_headers, "model/core/epics/demo.json")

    assert response.status_code == 200
    body = response.get_json()
    schemas.PreviewOut.model_validate(body)
    assert (body["type"], body["id"], body["display_name"]) == (
        "epic",
        "EPIC-DEMO",
        "Orket demo",
    )
    steps = body["sequencing"]
    assert [(s["step"], s["issue_id"], s["assigned_to"]) for s in steps] == [
        (1, "DEMO-1", "builder"),
        (2, "DEMO-2", "builder"),
    ]
    prompt = steps[0]["compiled_system_prompt"]
    for section in ("IDENTITY", "CARD SYSTEM PROTOCOL", "TOOLS", "GUARDRAIL"):
        assert section in prompt
    assert "write_file" in prompt


def test_preview_of_an_issue(client, auth_headers):
    response = preview(client, auth_headers, "model/core/epics/demo.json", "DEMO-2")

    body = response.get_json()
    assert response.status_code == 200
    assert (body["type"], body["id"], body["assigned_to"]) == (
        "issue",
        "DEMO-2",
        "builder",
    )
    assert body["display_name"] == "Document calc.py in agent_output/README.md"
    assert "IDENTITY" in body["compiled_system_prompt"]


def test_preview_of_a_rock_of_the_real_tree(real_client, auth_headers):
    response = preview(
        real_client, auth_headers, "model/core/rocks/initialize_orket.json"
    )

    body = response.get_json()
    assert body["type"] == "rock"
    assert body["display_name"].startswith("System Genesis")
    assert body["milestone_tasks"].startswith("Initialize Orket system settings")
    assert body["epics"] == [
        {"epic": "core_baseline", "department": "core"},
        {"epic": "model_reforge", "department": "core"},
    ]


def test_preview_of_a_real_epic_with_derived_issue_ids(real_client, auth_headers):
    response = preview(real_client, auth_headers, "model/core/epics/core_baseline.json")

    steps = response.get_json()["sequencing"]
    assert [s["issue_id"] for s in steps] == [
        "CORE_BASELINE-1",
        "CORE_BASELINE-2",
        "CORE_BASELINE-3",
    ]
    assert all(isinstance(s["compiled_system_prompt"], str) for s in steps)


def test_preview_in_another_department(real_client, auth_headers):
    response = preview(real_client, auth_headers, "model/creative/epics/void_lore.json")

    assert response.status_code == 200
    assert response.get_json()["type"] == "epic"


@pytest.mark.parametrize(
    "path, issue_id",
    [
        ("model/core/epics/nothing.json", None),
        ("model/core/rocks/nothing.json", None),
        ("model/core/epics/demo.json", "DEMO-99"),
    ],
)
def test_unknown_assets_are_404(client, auth_headers, path, issue_id):
    response = preview(client, auth_headers, path, issue_id)

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Asset not found"}


def test_an_invalid_asset_preview_is_422(client, auth_headers, settings):
    write_asset(settings.config_path, "epics/broken.json", {"name": "no team"})

    response = preview(client, auth_headers, "config/epics/broken.json")

    assert response.status_code == 422
    assert response.get_json()["detail"].startswith("Asset broken is invalid: ")


def test_preview_needs_a_path(client, auth_headers):
    response = client.get("/v1/system/preview-asset", headers=auth_headers)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", "path"]
