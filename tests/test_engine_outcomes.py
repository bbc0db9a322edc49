"""Attempt outcomes, one test per row of ENG-10, and multi-turn tool use (ENG-6)."""

from __future__ import annotations

import json

import pytest

from app.engine.providers import ScriptedProvider
from app.serving.startup import copy_packaged_fixtures
from tests.engine_support import (
    Harness,
    call,
    harness_factory_fixture,
    status,
)


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


GUARD_DONE = {"integrity_guard": [status("done")]}
RIGHT_CALC = "def add(a, b):\n    return a + b\n"
# Not the same length as the right one: the fixture imports calc.py, and a same-size
# rewrite within one second could be served from a stale __pycache__ entry.
WRONG_CALC = "def add(a, b):\n    return a - b  # wrong\n"


def _run_one(harness: Harness, replies: dict, **issue: object) -> tuple[str, str]:
    harness.setup([{"id": "O-1", "seat": "builder", **issue}], replies)
    return harness.run("t_epic")


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (status("code_review"), ("done", None)),
        (status("blocked", wait_reason="dependency"), ("blocked", "dependency")),
        (
            status("waiting_for_developer", wait_reason="input"),
            ("waiting_for_developer", "input"),
        ),
        (status("ready_for_testing"), ("done", None)),
        (status("canceled"), ("canceled", None)),
    ],
)
def test_agent_move_is_kept_and_resets_retries(harness: Harness, request_, expected):
    # Two idle attempts first, so the move has retries to reset.
    replies = {"coder": ["thinking", "still thinking", request_], **GUARD_DONE}

    _, _ = _run_one(harness, replies)

    card = harness.card("O-1")
    assert (card.status, card.wait_reason) == expected
    assert card.retry_count == 0


def test_guard_sending_back_returns_the_card_for_rework(harness: Harness) -> None:
    replies = {
        "coder": [status("code_review"), status("code_review")],
        "integrity_guard": [
            status("in_progress", comment="Please add tests."),
            status("done"),
        ],
    }

    run_id, result = _run_one(harness, replies)

    returned = harness.events_of(run_id, "card_returned")
    moves = [
        (e["data"]["from"], e["data"]["to"], e["data"]["by"])
        for e in harness.events_of(run_id, "card_status_changed")
    ]
    assert result == "done"
    assert len(returned) == 1 and returned[0]["data"]["issue_id"] == "O-1"
    assert ("code_review", "in_progress", "verifier") in moves
    assert ("in_progress", "ready", "system") in moves
    assert any("add tests" in c.content for c in harness.comments("O-1"))


def test_no_tool_calls_retries_then_blocks_for_input(harness: Harness) -> None:
    replies = {"coder": ["I have nothing to call."] * 5}

    run_id, result = _run_one(harness, replies, max_retries=2)

    card = harness.card("O-1")
    assert result == "failed"
    assert (card.status, card.wait_reason, card.retry_count) == ("blocked", "input", 3)
    assert len(harness.events_of(run_id, "retry_triggered")) == 2
    catastrophic = harness.events_of(run_id, "catastrophic_failure")
    assert catastrophic[0]["data"]["retry_count"] == 3
    assert (
        harness.events_of(run_id, "card_blocked")[0]["data"]["wait_reason"] == "input"
    )
    assert harness.comments("O-1")[-1].author == "system"


def test_turn_limit_counts_as_no_status_change(harness_factory) -> None:
    harness = harness_factory(max_turns_per_issue=2)
    listing = call("list_directory")
    replies = {"coder": [listing] * 4 + [status("code_review")], **GUARD_DONE}

    run_id, result = _run_one(harness, replies)

    retries = harness.events_of(run_id, "retry_triggered")
    assert result == "done"
    assert len(retries) == 2
    assert "turn limit" in retries[0]["data"]["error"]
    assert harness.card("O-1").retry_count == 0


def test_review_ending_in_code_review_retries_then_blocks_for_review(
    harness: Harness,
) -> None:
    replies = {"coder": [status("code_review")], "integrity_guard": ["Looks fine."] * 4}

    run_id, result = _run_one(harness, replies, max_retries=1)

    card = harness.card("O-1")
    assert result == "failed"
    assert (card.status, card.wait_reason) == ("blocked", "review")
    assert len(harness.events_of(run_id, "retry_triggered")) == 1
    assert len(harness.events_of(run_id, "catastrophic_failure")) == 1


def test_violation_limit_blocks_for_review_and_writes_a_policy_report(
    harness: Harness,
) -> None:
    outside = call("write_file", path="../../escape.txt", content="x")
    replies = {"coder": [[outside, outside, outside, status("code_review")]]}

    run_id, result = _run_one(harness, replies)

    card = harness.card("O-1")
    report_path = (
        harness.settings.builds_root
        / "build-t_epic"
        / "agent_output"
        / "policy_violation_O-1.json"
    )
    report = json.loads(report_path.read_text())
    assert result == "failed"
    assert (card.status, card.wait_reason, card.retry_count) == ("blocked", "review", 0)
    assert len(harness.events_of(run_id, "tool_blocked")) == 3
    assert report["violation_type"] == "governance"
    assert report["violations"] == 3
    assert report["session_id"] == run_id and report["card_id"] == "O-1"
    assert set(report) == {
        "timestamp",
        "session_id",
        "card_id",
        "violation_type",
        "detail",
        "violations",
        "remedy_suggestion",
        "active_roles",
    }
    assert not (harness.settings.data_path / "escape.txt").exists()


def test_provider_error_is_a_failed_turn_and_exhaustion_blocks_for_system(
    harness: Harness,
) -> None:
    harness.setup([{"id": "O-1", "seat": "builder", "max_retries": 0}], {})
    harness.write(
        "scripts",
        "t_script",
        {"schema": "orket-script/1", "on_exhausted": "error", "replies": {"coder": []}},
    )

    run_id, result = harness.run("t_epic")

    card = harness.card("O-1")
    failed = harness.events_of(run_id, "turn_failed")
    assert result == "failed"
    assert (card.status, card.wait_reason, card.retry_count) == ("blocked", "system", 1)
    assert failed[0]["data"]["type"] == "provider_error"


def test_capability_problem_blocks_for_resource_without_a_model_call(
    harness: Harness,
) -> None:
    harness.write(
        "roles",
        "coder",
        {"description": "Only bugs.", "capabilities": {"issue_types": ["bug"]}},
    )

    run_id, result = _run_one(harness, {"coder": [status("code_review")]}, type="task")

    card = harness.card("O-1")
    assert result == "failed"
    assert (card.status, card.wait_reason, card.retry_count) == (
        "blocked",
        "resource",
        0,
    )
    assert harness.events_of(run_id, "model_usage") == []
    assert "task" in harness.events_of(run_id, "card_blocked")[0]["data"]["detail"]


def test_a_tool_failure_is_shown_and_corrected_on_the_next_turn(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[dict]] = []
    original = ScriptedProvider.complete

    def recording(self, messages, options):
        seen.append(messages)
        return original(self, messages, options)

    monkeypatch.setattr(ScriptedProvider, "complete", recording)
    replies = {
        "coder": [
            call("read_file", path="agent_output/notes.txt"),
            call("write_file", path="agent_output/notes.txt", content="hello"),
            [call("read_file", path="agent_output/notes.txt"), status("code_review")],
        ],
        **GUARD_DONE,
    }

    run_id, result = _run_one(harness, replies)

    second_call = seen[1]
    assert result == "done"
    assert second_call[-1]["role"] == "user"
    results = json.loads(second_call[-1]["content"].removeprefix("TOOL RESULTS: "))
    assert results == [{"tool": "read_file", "ok": False, "error": "File not found"}]
    calls = harness.events_of(run_id, "tool_call")
    assert [c["data"]["result"]["ok"] for c in calls][:3] == [False, True, True]


def test_review_runs_verification_and_a_failing_fixture_refuses_done(
    harness: Harness,
) -> None:
    copy_packaged_fixtures(harness.settings)
    wrong = call("write_file", path="agent_output/calc.py", content=WRONG_CALC)
    right = call("write_file", path="agent_output/calc.py", content=RIGHT_CALC)
    replies = {
        "coder": [[wrong, status("code_review")], [right, status("code_review")]],
        "integrity_guard": [
            [status("done"), status("in_progress", comment="add() subtracts")],
            status("done"),
        ],
    }
    verification = {
        "fixture_path": "verification/demo/calc_fixture.py",
        "scenarios": [
            {"id": "S1", "input_data": {"a": 2, "b": 3}, "expected_output": 5}
        ],
    }

    run_id, result = _run_one(harness, replies, verification=verification)

    blocked = harness.events_of(run_id, "tool_blocked")
    completed = harness.events_of(run_id, "verification_completed")
    assert result == "done"
    assert blocked[0]["data"]["reason"] == "Verification failing: 0/1 passed"
    assert [(e["data"]["passed"], e["data"]["total"]) for e in completed] == [
        (0, 1),
        (1, 1),
    ]
    stored = harness.verification("O-1")
    assert stored["scenarios"][0]["status"] == "pass"
    assert stored["scenarios"][0]["actual_output"] == 5
