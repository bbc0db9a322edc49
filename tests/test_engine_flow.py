"""The traction loop end to end: the demo, scheduling, tick cap, halting, rocks, and
runs that cannot start (ENG-5, ENG-14, ENG-15, JOB-4)."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest

from app.engine.runner import Engine
from app.models.base import load_json
from app.runs import request_halt
from app.serving.startup import copy_packaged_fixtures
from tests.engine_support import (
    Harness,
    call,
    harness_factory_fixture,
    script_asset,
    status,
)


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


CALC = "def add(a, b):\n    return a + b\n"


def _turns(harness: Harness, run_id: str, card_id: str | None = None) -> list[dict]:
    return [
        event
        for event in harness.events_of(run_id, "turn_start")
        if card_id is None or event["card_id"] == card_id
    ]


def _time(event: dict) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


# The demo -----------------------------------------------------------------------------


def test_demo_writes_the_exact_file_and_every_card_is_done(harness: Harness) -> None:
    copy_packaged_fixtures(harness.settings)

    run_id, result = harness.run("demo", reset=True)

    workspace = harness.settings.builds_root / "build-demo"
    assert result == "done"
    assert (workspace / "agent_output" / "calc.py").read_text() == CALC
    assert harness.card("DEMO-1").status == "done"
    assert harness.card("DEMO-2").status == "done"
    assert len(harness.events_of(run_id, "model_usage")) >= 2
    verification = harness.verification("DEMO-1")["last_run"]
    assert (verification["passed"], verification["total_scenarios"]) == (1, 1)


def test_demo_events_start_with_session_start_and_end_with_run_finished(
    harness: Harness,
) -> None:
    copy_packaged_fixtures(harness.settings)

    run_id, _ = harness.run("demo", reset=True)

    names = [event["event"] for event in harness.events_of(run_id)]
    assert names[0] == "run_started"
    assert names[1] == "session_start"
    assert names[-1] == "run_finished"
    assert names.index("session_end") < names.index("success_recorded")
    finished = harness.events_of(run_id, "run_finished")[0]["data"]
    assert finished["status"] == "done"
    assert finished["cards"] == {"done": 2}
    assert finished["turns"] == 5
    assert finished["tokens"] > 0


def test_finished_run_row_has_status_end_time_transcript_and_snapshot(
    harness: Harness,
) -> None:
    from app.models.runtime import SessionSnapshot, SuccessLedger

    copy_packaged_fixtures(harness.settings)
    run_id, _ = harness.run("demo", reset=True)

    row = harness.run_row(run_id)
    transcript = load_json(row.transcript, [])
    assert row.status == "done" and row.end_time is not None
    assert [step["step_index"] for step in transcript] == list(range(5))
    assert {step["issue"] for step in transcript} == {"DEMO-1", "DEMO-2"}
    assert set(transcript[0]) == {"step_index", "role", "issue", "summary", "note"}
    with harness.db.reader() as session:
        snapshot = session.get(SessionSnapshot, run_id)
        ledger = session.query(SuccessLedger).filter_by(session_id=run_id).all()
    config = load_json(snapshot.config_json, {})
    assert config["epic"] == "demo" and config["build_id"] == "build-demo"
    assert len(load_json(snapshot.log_history, [])) == 5
    assert [(e.success_type, e.artifact_ref) for e in ledger] == [
        ("EPIC_COMPLETED", "build:build-demo")
    ]


def test_demo_in_another_build_leaves_the_default_build_alone(harness: Harness) -> None:
    copy_packaged_fixtures(harness.settings)

    _, result = harness.run("demo", build_id="demo-a")

    assert result == "done"
    assert harness.card("DEMO-1@demo-a").status == "done"
    assert harness.cards.get("DEMO-1") is None
    assert (
        harness.settings.builds_root / "demo-a" / "agent_output" / "calc.py"
    ).exists()


# Scheduling ---------------------------------------------------------------------------


def _three_cards(harness: Harness, chained: bool) -> str:
    issues = [
        {"id": "P-1", "seat": "builder"},
        {"id": "P-2", "seat": "builder", "depends_on": ["P-1"] if chained else []},
        {"id": "P-3", "seat": "builder", "depends_on": ["P-2"] if chained else []},
    ]
    work = [status("code_review")]
    return harness.setup(
        issues,
        {},
        script=script_asset(
            {"coder": work, "integrity_guard": [status("done")]}, delay_ms=150
        ),
    )


def test_independent_cards_run_in_parallel(harness_factory) -> None:
    harness = harness_factory(epic_concurrency=3)
    epic = _three_cards(harness, chained=False)

    run_id, result = harness.run(epic)

    starts = [_time(e) for e in _turns(harness, run_id) if not e["data"]["review"]]
    assert result == "done"
    assert len(starts) == 3
    # All three first turns began before any 150 ms model reply could have come back.
    assert (max(starts) - min(starts)).total_seconds() < 0.15


def test_chained_cards_wait_for_their_dependency_to_be_done(harness_factory) -> None:
    harness = harness_factory(epic_concurrency=3)
    epic = _three_cards(harness, chained=True)

    run_id, result = harness.run(epic)

    assert result == "done"
    done_at = {
        e["card_id"]: _time(e)
        for e in harness.events_of(run_id, "card_status_changed")
        if e["data"]["to"] == "done"
    }
    first_turn = {}
    for event in _turns(harness, run_id):
        first_turn.setdefault(event["card_id"], _time(event))
    assert first_turn["P-2"] > done_at["P-1"]
    assert first_turn["P-3"] > done_at["P-2"]


def _one_reviewed_card(harness: Harness) -> str:
    return harness.setup(
        [{"id": "T-1", "seat": "builder"}],
        {"coder": [status("code_review")], "integrity_guard": [status("done")]},
    )


def test_finishing_on_exactly_the_last_tick_succeeds(harness_factory) -> None:
    harness = harness_factory(max_ticks=2)
    epic = _one_reviewed_card(harness)

    run_id, result = harness.run(epic)

    assert result == "done"
    assert harness.events_of(run_id, "run_failed") == []


def test_work_left_after_the_last_tick_fails_with_tick_cap(harness_factory) -> None:
    harness = harness_factory(max_ticks=1)
    epic = _one_reviewed_card(harness)

    run_id, result = harness.run(epic)

    failed = harness.events_of(run_id, "run_failed")[0]["data"]
    assert result == "failed"
    assert failed["reason"] == "tick_cap"
    assert failed["error"] == "Hyper-Loop exhausted iterations (1)"
    assert harness.run_row(run_id).error == "Hyper-Loop exhausted iterations (1)"
    assert harness.events_of(run_id)[-1]["event"] == "run_finished"


def test_complexity_gate_fails_a_large_epic_without_idesign(harness: Harness) -> None:
    issues = [{"id": f"G-{n}", "seat": "builder"} for n in range(1, 12)]
    epic = harness.setup(issues, {})

    run_id, result = harness.run(epic)

    failed = harness.events_of(run_id, "run_failed")[0]["data"]
    assert result == "failed"
    assert failed["reason"] == "complexity_gate"
    assert "Complexity Gate Violation" in failed["error"]
    assert harness.events_of(run_id, "turn_start") == []


def test_halt_between_ticks_ends_the_run_halted(harness: Harness) -> None:
    epic = _one_reviewed_card(harness)
    run_id = harness.start(epic)
    harness.events.add_listener(
        lambda record: (
            request_halt(harness.db, run_id)
            if record["event"] == "turn_complete"
            else None
        )
    )

    result = Engine(harness.settings, harness.db, harness.events).run(run_id)

    names = [event["event"] for event in harness.events_of(run_id)]
    assert result == "halted"
    assert harness.run_row(run_id).status == "halted"
    assert harness.card("T-1").status == "code_review"
    assert names[-2:] == ["run_halted", "run_finished"]


def test_halt_mid_attempt_returns_the_card_to_ready(harness: Harness) -> None:
    write = call("write_file", path="agent_output/x.txt", content="x")
    epic = harness.setup([{"id": "H-1", "seat": "builder"}], {"coder": [write] * 6})
    run_id = harness.start(epic)
    harness.events.add_listener(
        lambda record: (
            request_halt(harness.db, run_id)
            if record["event"] == "turn_complete"
            else None
        )
    )

    result = Engine(harness.settings, harness.db, harness.events).run(run_id)

    card = harness.card("H-1")
    assert result == "halted"
    assert len(_turns(harness, run_id)) == 1
    assert (card.status, card.retry_count) == ("ready", 0)


# Rocks and issue runs -----------------------------------------------------------------


def _rock(harness: Harness, *, second_fails: bool = False) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": [status("done")]}
    harness.setup([{"id": "R1-1", "seat": "builder"}], replies, epic="r_one")
    seat = "ghost" if second_fails else "builder"
    harness.write(
        "epics",
        "r_two",
        {
            "name": "Two",
            "team": "t_team",
            "environment": "t_env",
            "architecture_governance": {"idesign": False},
            "issues": [{"id": "R2-1", "seat": seat}],
        },
    )
    harness.write(
        "rocks",
        "t_rock",
        {"name": "Rock", "epics": [{"epic": "r_one"}, {"epic": "r_two"}]},
    )


def test_rock_runs_its_epics_in_order_and_records_the_rock(harness: Harness) -> None:
    _rock(harness)

    run_id, result = harness.run("t_rock")

    successes = [
        event["data"]["type"] for event in harness.events_of(run_id, "success_recorded")
    ]
    assert result == "done"
    assert harness.card("R1-1").build_id == "build-r_one"
    assert harness.card("R2-1").build_id == "build-r_two"
    assert successes == ["EPIC_COMPLETED", "EPIC_COMPLETED", "ROCK_COMPLETED"]


def test_a_failed_epic_stops_the_rock(harness: Harness) -> None:
    _rock(harness, second_fails=True)
    harness.write(
        "rocks",
        "t_rock",
        {"epics": [{"epic": "r_two"}, {"epic": "r_one"}]},
    )

    run_id, result = harness.run("t_rock")

    assert result == "failed"
    assert harness.card("R2-1").status == "blocked"
    assert harness.cards.get("R1-1") is None


def test_two_epics_seeding_one_card_id_into_a_build_is_an_asset_error(
    harness: Harness,
) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": [status("done")]}
    harness.setup([{"id": "SAME-1", "seat": "builder"}], replies, epic="e_one")
    harness.setup([{"id": "SAME-1", "seat": "builder"}], replies, epic="e_two")
    harness.write("rocks", "t_rock", {"epics": [{"epic": "e_one"}, {"epic": "e_two"}]})

    run_id, result = harness.run("t_rock", build_id="shared")

    failed = harness.events_of(run_id, "run_failed")[0]["data"]
    assert result == "failed"
    assert failed["reason"] == "asset_error"
    assert "e_one" in failed["error"] and "e_two" in failed["error"]


def test_issue_run_works_only_its_card(harness: Harness) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": [status("done")]}
    epic = harness.setup(
        [{"id": "I-1", "seat": "builder"}, {"id": "I-2", "seat": "builder"}], replies
    )

    run_id, result = harness.run("I-2", type="issue")

    assert result == "done"
    assert harness.card("I-2").status == "done"
    assert harness.card("I-1").status == "ready"
    assert {e["card_id"] for e in _turns(harness, run_id)} == {"I-2"}
    assert epic == "t_epic"


def test_issue_run_of_a_done_card_ends_done_without_turns(harness: Harness) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": [status("done")]}
    harness.setup([{"id": "D-1", "seat": "builder"}], replies)
    harness.run("t_epic")

    run_id, result = harness.run("D-1", type="issue")

    assert result == "done"
    assert _turns(harness, run_id) == []


def test_issue_run_restarts_a_blocked_card(harness: Harness) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": [status("done")]}
    harness.setup([{"id": "B-1", "seat": "builder"}], replies)
    harness.run("t_epic")
    harness.set_columns("B-1", status="blocked", wait_reason="input", retry_count=3)

    _, result = harness.run("B-1", type="issue")

    card = harness.card("B-1")
    assert result == "done"
    assert (card.status, card.retry_count, card.wait_reason) == ("done", 0, None)


# Runs that cannot start or cannot reach the model -------------------------------------


def _failure(harness: Harness, run_id: str) -> dict:
    failures = harness.events_of(run_id, "run_failed")
    assert len(failures) == 1
    assert "Traceback" not in (failures[0]["data"]["error"] or "")
    return failures[0]["data"]


def test_missing_team_fails_the_run_with_an_asset_error(harness: Harness) -> None:
    harness.setup([{"id": "M-1"}], {}, team="no_such_team")

    run_id, result = harness.run("t_epic")

    failure = _failure(harness, run_id)
    assert result == "failed"
    assert failure["reason"] == "asset_error"
    assert "no_such_team" in failure["error"]


def test_missing_environment_fails_the_run(harness: Harness) -> None:
    harness.setup([{"id": "M-1"}], {}, environment="nowhere")

    run_id, result = harness.run("t_epic")

    assert result == "failed"
    assert "nowhere" in _failure(harness, run_id)["error"]


def test_missing_script_fails_the_run(harness: Harness) -> None:
    harness.setup([{"id": "M-1"}], {})
    harness.write("environments", "t_env", {"model": "scripted:not_written"})

    run_id, result = harness.run("t_epic")

    failure = _failure(harness, run_id)
    assert result == "failed"
    assert failure["reason"] == "asset_error"
    assert "not_written" in failure["error"]


def test_missing_seat_blocks_the_card_with_a_reason(harness: Harness) -> None:
    harness.setup([{"id": "M-1", "seat": "ghost"}], {})

    run_id, result = harness.run("t_epic")

    card = harness.card("M-1")
    failure = _failure(harness, run_id)
    assert result == "failed"
    assert failure["reason"] == "incomplete"
    assert failure["stuck_cards"] == [
        {"id": "M-1", "status": "blocked", "wait_reason": "resource"}
    ]
    assert (card.status, card.wait_reason) == ("blocked", "resource")
    assert "ghost" in harness.comments("M-1")[-1].content
    assert harness.events_of(run_id, "model_usage") == []


def test_missing_role_blocks_the_card(harness: Harness) -> None:
    harness.setup([{"id": "M-1", "seat": "builder"}], {})
    harness.write(
        "teams", "t_team", {"seats": {"builder": {"name": "B", "roles": ["phantom"]}}}
    )

    run_id, result = harness.run("t_epic")

    card = harness.card("M-1")
    assert result == "failed"
    assert (card.status, card.wait_reason) == ("blocked", "resource")
    assert "phantom" in harness.comments("M-1")[-1].content


def test_model_server_down_retries_then_blocks_with_system(harness_factory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    harness = harness_factory(ollama_host=f"http://127.0.0.1:{closed_port}")
    harness.setup([{"id": "S-1", "seat": "builder", "max_retries": 1}], {})
    harness.write("environments", "t_env", {"provider": "ollama", "model": "llama3"})

    run_id, result = harness.run("t_epic")

    card = harness.card("S-1")
    failed_turns = harness.events_of(run_id, "turn_failed")
    assert result == "failed"
    assert (card.status, card.wait_reason, card.retry_count) == ("blocked", "system", 2)
    assert len(failed_turns) == 2
    assert {e["data"]["type"] for e in failed_turns} == {"provider_error"}
    assert len(harness.events_of(run_id, "retry_triggered")) == 1
    assert len(harness.events_of(run_id, "catastrophic_failure")) == 1
