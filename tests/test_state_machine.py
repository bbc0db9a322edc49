"""The card state machine: the transition table, the four agent checks in order, and
the engine's own moves. Nothing here needs an organization file."""

from __future__ import annotations

import itertools

import pytest

from app.engine.state_machine import (
    ENGINE_MOVES,
    STATUSES,
    TRANSITIONS,
    check_agent_transition,
    clears_wait_reason,
    is_engine_move,
    normalize_status,
)

ALLOWED = {
    ("ready", "in_progress"),
    ("ready", "canceled"),
    ("in_progress", "blocked"),
    ("in_progress", "waiting_for_developer"),
    ("in_progress", "ready_for_testing"),
    ("in_progress", "code_review"),
    ("in_progress", "canceled"),
    ("blocked", "in_progress"),
    ("blocked", "canceled"),
    ("waiting_for_developer", "in_progress"),
    ("waiting_for_developer", "canceled"),
    ("ready_for_testing", "code_review"),
    ("ready_for_testing", "in_progress"),
    ("ready_for_testing", "canceled"),
    ("code_review", "done"),
    ("code_review", "in_progress"),
    ("code_review", "ready_for_testing"),
}
PASSED = {"total_scenarios": 2, "passed": 2, "failed": 0, "fatal": False}
GUARD = ["integrity_guard"]


def check(current, target, wait_reason="input", roles=GUARD, fixture=False, last=None):
    return check_agent_transition(current, target, wait_reason, roles, fixture, last)


def test_table_matches_the_specified_transitions():
    table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}

    assert table == ALLOWED
    assert set(TRANSITIONS) == set(STATUSES)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_every_allowed_transition_passes(current, target):
    assert check(current, target, last=PASSED) is None


@pytest.mark.parametrize(
    ("current", "target"),
    sorted(set(itertools.product(STATUSES, STATUSES)) - ALLOWED),
)
def test_everything_else_is_invalid_including_same_status(current, target):
    assert check(current, target) == (
        f"Invalid transition for issue: {current} -> {target}"
    )


@pytest.mark.parametrize("target", ["finished", "Done", "", "in progress"])
def test_unknown_target_status(target):
    assert check("code_review", target) == f"Invalid status: {target}"


@pytest.mark.parametrize("target", ["blocked", "waiting_for_developer"])
@pytest.mark.parametrize("reason", [None, "", "lunch"])
def test_waiting_needs_a_known_wait_reason(target, reason):
    assert check("in_progress", target, wait_reason=reason) == (
        "wait_reason is required (one of: resource, dependency, review, input, system)"
    )


@pytest.mark.parametrize(
    "reason", ["resource", "dependency", "review", "input", "system"]
)
def test_each_wait_reason_is_accepted(reason):
    assert check("in_progress", "blocked", wait_reason=reason) is None


def test_done_requires_integrity_guard():
    assert check("code_review", "done", roles=["coder"]) == (
        "Transition to done requires integrity_guard"
    )
    assert check("code_review", "done", roles=("coder", "integrity_guard")) is None


@pytest.mark.parametrize(
    ("last", "message"),
    [
        (None, "Verification failing: 0/0 passed"),
        (
            {"total_scenarios": 3, "passed": 2, "failed": 1, "fatal": False},
            "Verification failing: 2/3 passed",
        ),
        (
            {"total_scenarios": 1, "passed": 1, "failed": 0, "fatal": True},
            "Verification failing: 1/1 passed",
        ),
        (
            {"total_scenarios": 0, "passed": 0, "failed": 0, "fatal": False},
            "Verification failing: 0/0 passed",
        ),
    ],
)
def test_done_with_a_fixture_needs_a_fully_passing_verification(last, message):
    assert check("code_review", "done", fixture=True, last=last) == message


def test_done_with_a_passing_fixture_is_allowed():
    assert check("code_review", "done", fixture=True, last=PASSED) is None


def test_done_without_a_fixture_ignores_verification():
    assert check("code_review", "done", fixture=False, last=None) is None


def test_checks_run_in_order():
    # Unknown status beats everything.
    assert check("done", "nope", wait_reason=None, roles=[]).startswith(
        "Invalid status"
    )
    # The transition table comes before the wait reason.
    assert check("ready", "blocked", wait_reason=None).startswith("Invalid transition")
    # The reviewer role comes before the verification result.
    assert check("code_review", "done", roles=["coder"], fixture=True) == (
        "Transition to done requires integrity_guard"
    )


@pytest.mark.parametrize(
    ("source", "target", "move"),
    [
        ("ready", "in_progress", "work_start"),
        ("code_review", "code_review", "review_start"),
        ("ready_for_testing", "code_review", "review_start"),
        ("in_progress", "ready", "send_back"),
        ("in_progress", "blocked", "failure"),
        ("code_review", "blocked", "failure"),
        ("ready", "blocked", "failure"),
        ("in_progress", "ready", "retry"),
        ("in_progress", "ready", "halt_cleanup"),
        ("ready", "code_review", "webhook_review"),
        ("in_progress", "code_review", "webhook_review"),
        ("ready_for_testing", "code_review", "webhook_review"),
        ("blocked", "ready", "targeted_restart"),
        ("done", "ready", "reset"),
    ],
)
def test_engine_moves(source, target, move):
    assert is_engine_move(source, target, move)
    assert is_engine_move(source, target)


@pytest.mark.parametrize(
    ("source", "target", "move"),
    [
        ("done", "ready", "retry"),
        ("code_review", "code_review", "webhook_review"),
        ("blocked", "code_review", "review_start"),
        ("ready", "in_progress", "send_back"),
    ],
)
def test_named_engine_move_is_limited_to_its_sources(source, target, move):
    assert not is_engine_move(source, target, move)


@pytest.mark.parametrize(
    ("source", "target"),
    [("ready", "done"), ("done", "code_review"), ("blocked", "in_progress")],
)
def test_engine_never_makes_other_moves(source, target):
    assert not is_engine_move(source, target)


def test_every_engine_move_targets_a_real_status():
    for sources, target in ENGINE_MOVES.values():
        assert target in STATUSES
        assert set(sources) <= set(STATUSES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Code Review", "code_review"),
        (" IN-PROGRESS ", "in_progress"),
        ("waiting_for_developer", "waiting_for_developer"),
    ],
)
def test_normalize_status(raw, expected):
    assert normalize_status(raw) == expected


def test_wait_reason_is_cleared_when_leaving_a_waiting_status():
    assert clears_wait_reason("blocked", "in_progress")
    assert clears_wait_reason("waiting_for_developer", "canceled")
    assert not clears_wait_reason("in_progress", "blocked")
