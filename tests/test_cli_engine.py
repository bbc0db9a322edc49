"""`orket demo`, `run-epic`, `check-assets` and `verify` (OPS-2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from app.config import Settings
from app.db import Database
from app.models.runtime import Issue
from app.models.runtime import Session as RunRow
from app.serving.startup import copy_packaged_fixtures
from tests.engine_support import TEAM, call, status

CALC = "def add(a, b):\n    return a + b\n"
WRONG_CALC = "def add(a, b):\n    return a - b  # first try\n"


def _invoke(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["orket", *args], catch_exceptions=False)


def _write(settings: Settings, category: str, name: str, data: Any) -> None:
    folder = settings.config_path / category
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))


def _cards(settings: Settings) -> dict[str, Issue]:
    db = Database(settings.runtime_db_url, "runtime")
    try:
        with db.reader() as session:
            return {card.id: card for card in session.query(Issue).all()}
    finally:
        db.dispose()


def _runs(settings: Settings) -> list[RunRow]:
    db = Database(settings.runtime_db_url, "runtime")
    try:
        with db.reader() as session:
            return session.query(RunRow).all()
    finally:
        db.dispose()


# demo ---------------------------------------------------------------------------------


def test_demo_runs_every_card_to_done_and_shows_progress(app, settings) -> None:
    result = _invoke(app, "demo")

    out = result.output
    assert result.exit_code == 0, out
    assert (settings.verification_root / "demo" / "calc_fixture.py").is_file()
    assert "[turn] DEMO-1 coder@builder turn 1" in out
    assert "[tool] write_file agent_output/calc.py ok" in out
    assert "[status] DEMO-1 ready -> in_progress by system" in out
    assert "[verify] DEMO-1 1/1 passed" in out
    assert "Cards" in out and "DEMO-2" in out
    workspace = settings.builds_root / "build-demo"
    assert (workspace / "agent_output" / "calc.py").read_text() == CALC
    assert {c.status for c in _cards(settings).values()} == {"done"}
    assert _runs(settings)[0].worker_id.startswith("cli:")


def test_demo_twice_resets_and_passes_again(app, settings) -> None:
    assert _invoke(app, "demo").exit_code == 0

    again = _invoke(app, "demo", "--build-id", "demo-b")
    third = _invoke(app, "demo")

    assert again.exit_code == 0
    assert third.exit_code == 0
    assert _cards(settings)["DEMO-1@demo-b"].status == "done"


def test_commands_refuse_a_database_that_is_not_at_head(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(runtime_db_url_raw=f"sqlite:///{tmp_path / 'new.db'}")
    app = create_app(settings)
    try:
        result = app.test_cli_runner().invoke(args=["orket", "demo"])
    finally:
        app.extensions["orket"].stop()

    assert result.exit_code == 1
    assert "Database runtime is not at head; run: make migrate" in result.output
    assert "Traceback" not in result.output


# run-epic -----------------------------------------------------------------------------


def _chained_epic(settings: Settings) -> None:
    """Two chained cards: the first needs a fixed tool error, a refused write and
    rework after review before it is done."""
    copy_packaged_fixtures(settings)
    fixture = {
        "fixture_path": "verification/demo/calc_fixture.py",
        "scenarios": [
            {"id": "S1", "input_data": {"a": 2, "b": 3}, "expected_output": 5}
        ],
    }
    _write(settings, "teams", "t_team", TEAM)
    _write(settings, "environments", "t_env", {"model": "scripted:chain"})
    _write(
        settings,
        "epics",
        "chain",
        {
            "name": "Chained calculator",
            "team": "t_team",
            "environment": "t_env",
            "architecture_governance": {"idesign": False},
            "issues": [
                {"id": "CH-1", "seat": "builder", "verification": fixture},
                {"id": "CH-2", "seat": "builder", "depends_on": ["CH-1"]},
            ],
        },
    )
    _write(
        settings,
        "scripts",
        "chain",
        {
            "schema": "orket-script/1",
            "replies": {
                "CH-1/coder": [
                    call("read_file", path="agent_output/calc.py"),
                    [
                        call("write_file", path="../../../escape.py", content="x"),
                        call(
                            "write_file",
                            path="agent_output/calc.py",
                            content=WRONG_CALC,
                        ),
                    ],
                    status("code_review"),
                    [
                        call("write_file", path="agent_output/calc.py", content=CALC),
                        status("code_review"),
                    ],
                ],
                "CH-1/integrity_guard": [
                    status("in_progress", comment="add() must add, not subtract"),
                    status("done"),
                ],
                "CH-2/coder": [
                    [
                        call(
                            "write_file",
                            path="agent_output/README.md",
                            content="# calc\n",
                        ),
                        status("code_review"),
                    ]
                ],
                "integrity_guard": [status("done")],
            },
        },
    )


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def test_run_epic_reworks_corrects_and_stays_inside_the_workspace(
    app, settings, tmp_path: Path
) -> None:
    _chained_epic(settings)
    before = _files(tmp_path)

    result = _invoke(app, "run-epic", "chain")

    out = result.output
    workspace = settings.builds_root / "build-chain"
    cards = _cards(settings)
    assert result.exit_code == 0, out
    assert (cards["CH-1"].status, cards["CH-2"].status) == ("done", "done")
    assert "error: File not found" in out
    assert "[blocked] write_file: Security violation: Cannot write outside" in out
    assert "[status] CH-1 code_review -> in_progress by verifier" in out
    assert "[verify] CH-1 0/1 passed" in out and "[verify] CH-1 1/1 passed" in out
    assert (workspace / "agent_output" / "calc.py").read_text() == CALC
    # The fixture runner's own bytecode cache is not the agent's doing.
    written = {p for p in _files(tmp_path) - before if "__pycache__" not in p.parts}
    allowed = (workspace, settings.data_path / "default", tmp_path / "dbs")
    outside = [p for p in written if not any(p.is_relative_to(a) for a in allowed)]
    assert outside == []
    assert not list(tmp_path.rglob("escape.py"))


def test_run_epic_of_an_unknown_target_fails_with_the_api_message(app) -> None:
    result = _invoke(app, "run-epic", "missing")

    assert result.exit_code == 1
    assert "Card missing not found." in result.output


def test_run_epic_refuses_a_build_with_an_active_run(app, settings) -> None:
    assert _invoke(app, "run-epic", "demo", "--enqueue").exit_code == 0

    result = _invoke(app, "run-epic", "demo")

    assert result.exit_code == 1
    assert "Build build-demo already has an active run" in result.output


def test_run_epic_enqueue_only_queues(app, settings) -> None:
    result = _invoke(app, "run-epic", "demo", "--enqueue", "--build-id", "q1")

    row = _runs(settings)[0]
    assert result.exit_code == 0
    assert f"Queued run {row.id} (build q1)" in result.output
    assert (row.status, row.source, row.worker_id) == ("queued", "cli", None)
    assert _cards(settings) == {}


def test_run_epic_exit_code_follows_the_run(app, settings) -> None:
    _write(settings, "teams", "t_team", TEAM)
    _write(settings, "environments", "t_env", {"model": "scripted:idle"})
    _write(settings, "scripts", "idle", {"schema": "orket-script/1", "replies": {}})
    _write(
        settings,
        "epics",
        "idle",
        {
            "team": "t_team",
            "environment": "t_env",
            "issues": [{"id": "ID-1", "seat": "builder", "max_retries": 0}],
        },
    )

    result = _invoke(app, "run-epic", "idle")

    assert result.exit_code == 1
    assert "Run " in result.output and ": failed" in result.output
    assert "Traceback" not in result.output


# check-assets -------------------------------------------------------------------------


def test_check_assets_passes_on_the_packaged_defaults(app) -> None:
    result = _invoke(app, "check-assets")

    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output


def test_check_assets_reports_a_broken_file_and_fails(app, settings) -> None:
    broken = settings.config_path / "epics" / "broken.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")

    result = _invoke(app, "check-assets")

    assert result.exit_code == 1
    assert f"ERROR {broken}" in result.output
    assert "Traceback" not in result.output


def test_check_assets_of_the_real_orket_tree_reports_by_file(settings_factory) -> None:
    from tests.conftest import ORKET_MODEL_TREE

    settings = settings_factory(
        config_dir=ORKET_MODEL_TREE / "config", model_dir=ORKET_MODEL_TREE / "model"
    )
    app = create_app(settings)
    try:
        result = app.test_cli_runner().invoke(args=["orket", "check-assets"])
    finally:
        app.extensions["orket"].stop()

    assert "Traceback" not in result.output
    assert "WARNING " + str(ORKET_MODEL_TREE / "model") in result.output
    assert "asset files checked" in result.output.splitlines()[-1]


# verify -------------------------------------------------------------------------------


def test_verify_a_database_card_prints_the_log_and_stores_the_result(
    app, settings
) -> None:
    assert _invoke(app, "demo").exit_code == 0

    result = _invoke(app, "verify", "DEMO-1")

    lines = result.output.splitlines()
    assert result.exit_code == 0
    assert lines[0].startswith("--- Verification Started at ")
    assert "  [PASS] Actual matches Expected: 5" in lines
    assert lines[-1] == "--- Verification Complete: 1 Passed, 0 Failed ---"


def test_verify_json_prints_only_the_result_object(app, settings) -> None:
    assert _invoke(app, "demo").exit_code == 0

    result = _invoke(app, "verify", "DEMO-1", "--json")

    body = json.loads(result.output)
    assert (body["passed"], body["total_scenarios"], body["fatal"]) == (1, 1, False)


def test_verify_an_asset_issue_without_a_card_uses_the_default_build(
    app, settings
) -> None:
    copy_packaged_fixtures(settings)

    result = _invoke(app, "verify", "DEMO-1", "--json")

    body = json.loads(result.output)
    assert result.exit_code == 1
    assert body["failed"] == 1
    assert _cards(settings) == {}


@pytest.mark.parametrize("card_id", ["NOPE-1", "DEMO-2"])
def test_verify_unknown_ids_and_cards_without_fixtures(app, card_id) -> None:
    result = _invoke(app, "verify", card_id)

    if card_id == "NOPE-1":
        assert result.exit_code == 2
        assert "Unknown card or issue NOPE-1" in result.output
    else:
        assert result.exit_code == 1
        assert "No verification fixture defined" in result.output
