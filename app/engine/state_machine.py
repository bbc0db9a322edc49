"""The card state machine: which status changes an agent may ask for, and which the
engine and the webhook make on their own.

Agent requests go through `check_agent_transition`, which applies the four checks in
a fixed order so the first failing rule is the one reported. Engine and webhook moves
bypass those checks; `is_engine_move` says whether a change is one of them. Both work
with or without an organization file: nothing here reads configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.models.runtime import CARD_STATUSES, WAIT_REASONS

STATUSES = CARD_STATUSES
WAITING_STATUSES = frozenset({"blocked", "waiting_for_developer"})
TERMINAL_STATUSES = frozenset({"done", "canceled", "archived"})
REVIEW_PENDING_STATUSES = frozenset({"code_review", "ready_for_testing"})
REVIEWER_ROLE = "integrity_guard"

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "ready": frozenset({"in_progress", "canceled"}),
    "in_progress": frozenset(
        {
            "blocked",
            "waiting_for_developer",
            "ready_for_testing",
            "code_review",
            "canceled",
        }
    ),
    "blocked": frozenset({"in_progress", "canceled"}),
    "waiting_for_developer": frozenset({"in_progress", "canceled"}),
    "ready_for_testing": frozenset({"code_review", "in_progress", "canceled"}),
    "code_review": frozenset({"done", "in_progress", "ready_for_testing"}),
    "done": frozenset(),
    "canceled": frozenset(),
    "archived": frozenset(),
}

_ALL = frozenset(STATUSES)

# The moves the engine (role `system`) and the webhook (role `webhook`) make without
# the agent checks, by name: (allowed source statuses, target status).
ENGINE_MOVES: Mapping[str, tuple[frozenset[str], str]] = {
    "work_start": (frozenset({"ready"}), "in_progress"),
    "review_start": (REVIEW_PENDING_STATUSES, "code_review"),
    "send_back": (frozenset({"in_progress"}), "ready"),
    "failure": (
        frozenset({"ready", "in_progress", "ready_for_testing", "code_review"}),
        "blocked",
    ),
    "retry": (frozenset({"in_progress"}), "ready"),
    "halt_cleanup": (frozenset({"in_progress"}), "ready"),
    "webhook_review": (
        frozenset({"ready", "in_progress", "ready_for_testing"}),
        "code_review",
    ),
    # Seeding (resume, targeted issue runs and `reset=true`) also writes `ready`.
    "resume": (frozenset({"in_progress"}), "ready"),
    "targeted_restart": (
        frozenset(
            {"blocked", "waiting_for_developer", "in_progress", "ready_for_testing"}
        ),
        "ready",
    ),
    "reset": (_ALL, "ready"),
}


def normalize_status(value: str) -> str:
    """`"Code Review"`, `"CODE-REVIEW"` and `" code_review "` all become `code_review`.

    The result may still be unknown; `check_agent_transition` reports that.
    """
    return "_".join(value.strip().lower().replace("-", " ").split())


def allowed_targets(status: str) -> frozenset[str]:
    return TRANSITIONS.get(status, frozenset())


def wait_reason_required_message() -> str:
    return f"wait_reason is required (one of: {', '.join(WAIT_REASONS)})"


def check_agent_transition(
    card_status: str,
    target: str,
    wait_reason: str | None,
    acting_roles: Iterable[str],
    has_fixture: bool,
    latest_verification: Mapping[str, Any] | None,
) -> str | None:
    """The error for an agent's status request, or None when it is allowed.

    Statuses are compared exactly; callers normalise agent input first
    (`normalize_status`). `latest_verification` is the stored VER-3 result of the
    card's fixture, or None when it has never run.
    """
    if target not in _ALL:
        return f"Invalid status: {target}"
    if target not in allowed_targets(card_status):
        return f"Invalid transition for issue: {card_status} -> {target}"
    if target in WAITING_STATUSES and wait_reason not in WAIT_REASONS:
        return wait_reason_required_message()
    if target == "done" and REVIEWER_ROLE not in set(acting_roles):
        return f"Transition to done requires {REVIEWER_ROLE}"
    if target == "done" and has_fixture:
        return _verification_problem(latest_verification)
    return None


def verification_passed(result: Mapping[str, Any] | None) -> bool:
    """True when a stored result ran at least one scenario and every one passed."""
    if not result or result.get("fatal"):
        return False
    total = _count(result, "total_scenarios")
    return total > 0 and _count(result, "passed") == total


def _verification_problem(result: Mapping[str, Any] | None) -> str | None:
    if verification_passed(result):
        return None
    passed = _count(result, "passed") if result else 0
    total = _count(result, "total_scenarios") if result else 0
    return f"Verification failing: {passed}/{total} passed"


def _count(result: Mapping[str, Any], key: str) -> int:
    value = result.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_engine_move(from_status: str, to_status: str, move: str | None = None) -> bool:
    """Whether the engine or webhook may make this change without the agent checks.

    With `move` (a key of ENGINE_MOVES) only that named move is considered.
    """
    candidates = [ENGINE_MOVES[move]] if move else ENGINE_MOVES.values()
    return any(
        from_status in sources and to_status == target for sources, target in candidates
    )


def clears_wait_reason(from_status: str, to_status: str) -> bool:
    """`wait_reason` is dropped when a card leaves a waiting status."""
    return from_status in WAITING_STATUSES and to_status not in WAITING_STATUSES
