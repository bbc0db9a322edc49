"""One card's share of a tick: an attempt of up to ORKET_MAX_TURNS_PER_ISSUE turns
(ENG-6) and what it leaves the card in (ENG-10).

A work attempt moves a `ready` card to `in_progress` and lets its seat work; a review
attempt runs the card's verification, moves it to `code_review` and lets the reviewer
seat decide. Whatever happens, the card ends in a state the next tick or a person can
act on: no failure leaves it stranded and none aborts the run.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from app.engine.assets import (
    AssetError,
    AssetNotFoundError,
    Role,
    seat_key,
)
from app.engine.cards import StatusChange, depends_on
from app.engine.context import AttemptContext, EpicScope, RunState, TurnRecord
from app.engine.model_choice import ModelChoice, ProviderSetupError, choose_model
from app.engine.parser import parse_tool_calls
from app.engine.prompt import build_messages, system_prompt, task_prompt
from app.engine.providers import ModelProviderError
from app.engine.records import write_snapshot
from app.engine.state_machine import REVIEWER_ROLE
from app.engine.tools import run_tool_call, visible_tools
from app.engine.verify import verify_card
from app.engine.workspace import atomic_write
from app.models.base import isoformat, utcnow
from app.models.runtime import Issue

log = logging.getLogger(__name__)

DEFAULT_SEAT = "standard"
MEMORY_CHARS = 200
_DECISION = re.compile("decision", re.IGNORECASE)


class SeatProblem(Exception):
    """The card's seat, a role or the card type does not fit (`blocked`/`resource`)."""


@dataclass
class TurnsOutcome:
    """How the turns of an attempt ended."""

    halted: bool = False
    violation: str | None = None
    provider_error: str | None = None
    # The last reply held no call at all (rather than the turn limit ending it).
    idle: bool = False


def run_attempt(run: RunState, scope: EpicScope, card_id: str, review: bool) -> None:
    """Run one attempt; every failure is turned into a card outcome (ENG-10)."""
    attempt = Attempt(run, scope, card_id, review)
    try:
        attempt.execute()
    except Exception as exc:  # noqa: BLE001 - one card's failure must not end the run
        attempt.crashed(exc)


class Attempt:
    def __init__(
        self, run: RunState, scope: EpicScope, card_id: str, review: bool
    ) -> None:
        self.run = run
        self.scope = scope
        self.card_id = card_id
        self.review = review
        self.role = "system"
        self.seat = "system"
        self.started = False
        self.start_status = "code_review" if review else "in_progress"

    # The steps ---------------------------------------------------------------------

    def execute(self) -> None:
        card = self.run.cards.get(self.card_id)
        if card is None:
            return
        verification = self._verify(card) if self.review else None
        try:
            ctx = self._context(card)
        except SeatProblem as exc:
            self._block("resource", str(exc))
            return
        self.role, self.seat = ctx.role, ctx.seat_key

        change = self._start(ctx, card)
        if not change.ok:
            log.warning("card %s not started: %s", self.card_id, change.error)
            return
        self.started = True
        try:
            choice = choose_model(self.run, self.scope, ctx.role)
        except ProviderSetupError as exc:
            self._block("system", str(exc))
            return

        outcome = self._turns(ctx, choice, verification)
        self._checkpoint()
        self._settle(outcome)

    def _start(self, ctx: AttemptContext, card: Issue) -> StatusChange:
        """Engine move to the attempt's status with the seat as assignee; a review
        of a card already in `code_review` only takes the assignee."""
        values = {"assignee": ctx.seat_key}
        if self.review and card.status == "code_review":
            self.run.cards.update_fields(self.card_id, **values)
            return StatusChange(self.card_id, card.status, card.status)
        move = "review_start" if self.review else "work_start"
        return self.run.cards.move(
            self.card_id, move, run_id=self.run.run_id, values=values
        )

    def crashed(self, exc: Exception) -> None:
        """An unexpected error: reported, then treated like a failed turn (or, before
        the card was taken, as a `system` block so it is not retried blindly)."""
        log.exception("attempt on %s failed run_id=%s", self.card_id, self.run.run_id)
        self.run.events.emit_error(
            "attempt", exc, run_id=self.run.run_id, card_id=self.card_id
        )
        self._emit(
            "turn_failed",
            {
                "issue_id": self.card_id,
                "error": "internal error",
                "type": "internal_error",
            },
            level="error",
        )
        try:
            if self.started:
                self._no_progress("internal error", system=True)
            else:
                self._block("system", "internal error before the attempt started")
        except Exception:  # noqa: BLE001 - already reported; never end the run here
            log.exception("could not settle card %s", self.card_id)

    # Seat and roles ------------------------------------------------------------------

    def _context(self, card: Issue) -> AttemptContext:
        team = self.scope.team
        if self.review:
            seat = team.review_seat()
            if seat is not None:
                key, role_names = seat_key(seat.key), list(seat.roles)
            else:
                key, role_names = self._card_seat(card)
                role_names = [
                    REVIEWER_ROLE,
                    *[r for r in role_names if r != REVIEWER_ROLE],
                ]
        else:
            key, role_names = self._card_seat(card)
        if not role_names:
            raise SeatProblem(f"Seat '{key}' of team '{team.stem}' holds no roles")
        roles = tuple(self._role(name) for name in role_names)
        if card.type not in roles[0].issue_types:
            raise SeatProblem(
                f"Role '{roles[0].name}' does not take cards of type '{card.type}' "
                f"(it takes: {', '.join(roles[0].issue_types)})"
            )
        tools = visible_tools([role.tools for role in roles])
        return AttemptContext(
            self.run, self.scope, self.card_id, key, roles, self.review, tools
        )

    def _card_seat(self, card: Issue) -> tuple[str, list[str]]:
        seat = self.scope.team.find_seat(card.seat or DEFAULT_SEAT)
        if seat is None:
            raise SeatProblem(
                f"Seat '{card.seat}' is not a seat of team '{self.scope.team.stem}'"
            )
        return seat_key(seat.key), list(seat.roles)

    def _role(self, name: str) -> Role:
        try:
            return self.run.store.load_role(
                name, self.scope.team, self.scope.department
            )
        except AssetNotFoundError:
            raise SeatProblem(f"Role '{name}' not found") from None
        except AssetError as exc:
            raise SeatProblem(str(exc)) from None

    # Turns -------------------------------------------------------------------------

    def _turns(
        self,
        ctx: AttemptContext,
        choice: ModelChoice,
        verification: dict[str, Any] | None,
    ) -> TurnsOutcome:
        settings = self.run.settings
        system, task = self._prompts(ctx, choice, verification)
        outcome = TurnsOutcome()
        for turn in range(1, settings.max_turns_per_issue + 1):
            if self.run.halt_requested():
                outcome.halted = True
                break
            finished = self._turn(ctx, choice, system, task, turn, outcome)
            if finished:
                break
        return outcome

    def _turn(
        self,
        ctx: AttemptContext,
        choice: ModelChoice,
        system: str,
        task: str,
        turn: int,
        outcome: TurnsOutcome,
    ) -> bool:
        """One model call and its tool calls; True when the attempt should stop."""
        run = self.run
        history = run.recent_turns(self.card_id, run.settings.context_window)
        messages = build_messages(system, task, history)
        self._emit(
            "turn_start",
            {
                "issue_id": self.card_id,
                "role": ctx.role,
                "seat": ctx.seat_key,
                "turn": turn,
                "review": self.review,
            },
        )
        context = {
            "run_id": run.run_id,
            "issue_id": self.card_id,
            "role": ctx.role,
            "review": self.review,
        }
        try:
            completion = choice.provider.complete(
                messages, choice.options(self.scope, context)
            )
        except ModelProviderError as exc:
            outcome.provider_error = str(exc)
            self._emit(
                "turn_failed",
                {"issue_id": self.card_id, "error": str(exc), "type": "provider_error"},
                level="error",
            )
            return True
        self._emit("model_usage", {**_usage(completion), "issue_id": self.card_id})

        parsed = parse_tool_calls(completion.text)
        results: list[dict[str, Any]] = [
            {"tool": None, "ok": False, "error": error} for error in parsed.errors
        ]
        for call in parsed.calls:
            called = run_tool_call(ctx, call)
            results.append(called.for_model())
            if (
                called.violation
                and self._violations() >= run.settings.max_violations_per_issue
            ):
                outcome.violation = called.result.get("error")
                break

        tokens = completion.usage.get("total_tokens", 0)
        run.transcript.add(
            ctx.role,
            self.card_id,
            completion.text,
            [{"tool": c.tool, "args": c.args} for c in parsed.calls],
            tokens,
        )
        run.record_turn(self.card_id, TurnRecord(completion.text, results))
        run.count_turn(tokens)
        outcome.idle = not parsed.calls and not parsed.errors
        self._remember(ctx, completion.text)
        self._emit(
            "turn_complete",
            {
                "issue_id": self.card_id,
                "role": ctx.role,
                "tool_calls": len(parsed.calls),
                "tokens": tokens,
            },
        )
        if outcome.violation or outcome.idle:
            return True
        card = run.cards.get(self.card_id)
        return card is None or card.status != self.start_status

    def _prompts(
        self,
        ctx: AttemptContext,
        choice: ModelChoice,
        verification: dict[str, Any] | None,
    ) -> tuple[str, str]:
        card, statuses, comments = self.run.cards.with_context(self.card_id)
        if card is None:
            raise LookupError(f"card {self.card_id} disappeared during its attempt")
        memories = self.run.memory.search(f"{card.summary} {card.note or ''}", limit=5)
        system = system_prompt(
            organization=self.run.organization,
            team_name=self.scope.team.name,
            seat_key=ctx.seat_key,
            roles=ctx.roles,
            idesign=self.scope.idesign,
            tools=ctx.visible_tools,
            dialect=choice.dialect,
            memories=memories,
        )
        task = task_prompt(
            card=card,
            epic=self.scope.epic,
            dependencies=[(dep, statuses.get(dep)) for dep in depends_on(card)],
            comments=comments,
            review=self.review,
            verification=verification,
        )
        return system, task

    def _remember(self, ctx: AttemptContext, reply: str) -> None:
        if not (_DECISION.search(reply) or "architect" in ctx.seat_key.lower()):
            return
        self.run.memory.remember(
            f"Decision by {ctx.seat_key} on {self.card_id}: {reply[:MEMORY_CHARS]}",
            {"run_id": self.run.run_id, "issue_id": self.card_id, "seat": ctx.seat_key},
        )
        self._emit("memory_stored", {"issue_id": self.card_id})

    def _violations(self) -> int:
        with self.run.lock:
            return self.run.violations[self.card_id]

    # Verification, checkpoint ------------------------------------------------------

    def _verify(self, card: Issue) -> dict[str, Any]:
        return verify_card(
            self.run.settings,
            self.run.cards,
            self.run.events,
            card,
            run_id=self.run.run_id,
            role=REVIEWER_ROLE,
        )

    def _checkpoint(self) -> None:
        write_snapshot(
            self.run.db,
            self.run.run_id,
            snapshot_config(self.scope),
            self.run.transcript.log_history(),
        )

    # Outcomes (ENG-10) -------------------------------------------------------------

    def _settle(self, outcome: TurnsOutcome) -> None:
        card = self.run.cards.get(self.card_id)
        if card is None:
            return
        if outcome.halted and card.status == self.start_status:
            if card.status == "in_progress":
                self.run.cards.move(
                    self.card_id, "halt_cleanup", run_id=self.run.run_id
                )
            return
        if outcome.violation:
            self._block("review", outcome.violation, policy=True)
            return
        if card.status != self.start_status:
            self._moved(card)
            return
        if outcome.provider_error:
            self._no_progress(outcome.provider_error, system=True)
            return
        why = "no tool calls" if outcome.idle else "turn limit reached"
        self._no_progress(f"No status change ({why})")

    def _moved(self, card: Issue) -> None:
        if self.review and card.status == "in_progress":
            self.run.cards.move(self.card_id, "send_back", run_id=self.run.run_id)
            self._emit("card_returned", {"issue_id": self.card_id, "by": self.seat})
        elif self.review and card.status == "ready_for_testing":
            self._no_progress("Review ended in ready_for_testing")
        elif card.retry_count:
            self.run.cards.update_fields(self.card_id, retry_count=0)

    def _no_progress(self, error: str, *, system: bool = False) -> None:
        card = self.run.cards.get(self.card_id)
        if card is None:
            return
        count = self.run.cards.add_retry(self.card_id)
        data = {
            "issue_id": self.card_id,
            "retry_count": count,
            "max_retries": card.max_retries,
            "error": error,
        }
        if count <= card.max_retries:
            if card.status == "in_progress":
                self.run.cards.move(self.card_id, "retry", run_id=self.run.run_id)
            self._emit("retry_triggered", data, level="warning")
            return
        reason = "system" if system else ("review" if self.review else "input")
        self._block(
            reason, f"Retries exhausted ({count - 1} of {card.max_retries}): {error}"
        )
        self._emit("catastrophic_failure", data, level="error")

    def _block(self, wait_reason: str, detail: str, *, policy: bool = False) -> None:
        """Engine move to `blocked`, a `system` comment saying why, `card_blocked`."""
        change = self.run.cards.move(
            self.card_id, "failure", run_id=self.run.run_id, wait_reason=wait_reason
        )
        if not change.ok:
            log.warning("card %s not blocked: %s", self.card_id, change.error)
            return
        self.run.cards.add_comment(
            self.card_id,
            "system",
            f"Blocked ({wait_reason}): {detail}",
            run_id=self.run.run_id,
        )
        self._emit(
            "card_blocked",
            {"issue_id": self.card_id, "wait_reason": wait_reason, "detail": detail},
            level="warning",
        )
        if policy:
            self._policy_report(detail)

    def _policy_report(self, detail: str) -> None:
        lowered = detail.lower()
        if "transition" in lowered:
            kind = "state_transition"
        elif "tool" in lowered or "gate" in lowered:
            kind = "tool_gate"
        elif "idesign" in lowered:
            kind = "idesign"
        else:
            kind = "governance"
        report = {
            "timestamp": isoformat(utcnow()),
            "session_id": self.run.run_id,
            "card_id": self.card_id,
            "violation_type": kind,
            "detail": detail,
            "violations": self._violations(),
            "remedy_suggestion": _REMEDIES[kind],
            "active_roles": [self.role],
        }
        path = (
            self.scope.workspace
            / "agent_output"
            / f"policy_violation_{self.card_id}.json"
        )
        atomic_write(path, json.dumps(report, indent=2).encode("utf-8"))

    def _emit(self, event: str, data: dict[str, Any], level: str = "info") -> None:
        self.run.events.emit(
            event,
            data,
            role=self.role,
            level=level,
            run_id=self.run.run_id,
            card_id=self.card_id,
        )


_REMEDIES = {
    "state_transition": "Follow the card state machine: request only allowed "
    "transitions and give a wait_reason when blocking.",
    "tool_gate": "Use only the tools offered, with their required arguments, and "
    "keep every path inside the workspace.",
    "idesign": "Place code under a recognised component folder and follow the "
    "iDesign naming and layering rules.",
    "governance": "Review the role's constraints and the card's requirements "
    "before acting.",
}


def snapshot_config(scope: EpicScope) -> dict[str, Any]:
    return {
        "epic": scope.epic.stem,
        "team": scope.team.stem,
        "env": scope.environment.name,
        "build_id": scope.build_id,
        "timestamp": isoformat(utcnow()),
    }


def _usage(completion: Any) -> dict[str, Any]:
    usage = completion.usage
    return {
        "provider": completion.provider,
        "model": completion.model,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "latency_ms": completion.latency_ms,
    }
