"""The review-cycle policy (SPEC WH-5, WH-7): what a delivery means for its PR.

`ReviewPolicy.handle` runs one webhook-database transaction per delivery:

1. insert-or-ignore the PR's `pr_review_cycles` row and lock it (`FOR UPDATE` on
   PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises writers), so two
   deliveries for one PR are decided one after the other;
2. dedupe by delivery id and by body hash (replays carry new ids);
3. decide, writing the cycle, the `review_failures` row and every owed call or
   runtime write as outbox rows;
4. record the `webhook_events` row and commit.

Events are emitted only after the commit, by the caller, from `PolicyResult.events`.
The policy calls nothing outside the two databases, and only reads the runtime one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.engine.state_machine import ENGINE_MOVES, TERMINAL_STATUSES
from app.models.base import dump_json, load_json, utcnow
from app.models.runtime import Issue
from app.models.webhook import GiteaOutbox, PrReviewCycle, ReviewFailure, WebhookEvent
from app.runs import active_build_conflict
from app.sandbox.identity import pr_sandbox_id, pr_sandbox_key
from app.webhook import messages
from app.webhook.bugfix import start_phase
from app.webhook.deliveries import NormalisedDelivery, card_id_candidates
from app.webhook.outbox import (
    PullRef,
    add_rows,
    close_pr_row,
    comment_row,
    merge_row,
    requirements_issue_row,
    runtime_row,
)

CLOSED_CYCLE = frozenset({"rejected", "merged", "closed"})
OPEN_CYCLE = ("active", "escalated")
COUNTED_STATUSES = ("accepted", "ignored")
MOVABLE_TO_REVIEW = ENGINE_MOVES["webhook_review"][0]
# Deliveries that tell us the PR's current head (reviews may arrive late).
HEAD_EVENTS = frozenset(
    {"pr_opened", "pr_reopened", "pr_synchronized", "review_approved"}
)


@dataclass(frozen=True)
class Delivery:
    """A delivery that passed the signature, the rate limit and validation."""

    delivery_id: str
    body_sha256: str
    payload_text: str
    normalised: NormalisedDelivery


@dataclass
class PolicyResult:
    """The answer to a delivery, and the events to emit once it is committed."""

    status: str
    delivery_id: str
    event: str | None
    actions: list[str] = field(default_factory=list)
    message: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    original_delivery_id: str | None = None

    def response(self) -> dict[str, Any]:
        """The WH-1 response body."""
        return {
            "status": self.status,
            "delivery_id": self.delivery_id,
            "event": self.event,
            "actions": list(self.actions),
            "message": self.message,
        }


@dataclass
class _Decision:
    """What the rules decided for one delivery, before it is recorded."""

    status: str
    message: str
    actions: list[str] = field(default_factory=list)
    rows: list[GiteaOutbox] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _ignored(message: str, *actions: str) -> _Decision:
    return _Decision("ignored", message, list(actions))


class ReviewPolicy:
    """WH-7 for one process: thresholds and the bot login come from the settings."""

    def __init__(
        self, settings: Settings, webhook_db: Database, runtime_db: Database
    ) -> None:
        self.settings = settings
        self.webhook_db = webhook_db
        self.runtime_db = runtime_db
        self.escalate_at = settings.review_escalate_at
        self.reject_at = settings.review_reject_at
        self.bot_login = settings.gitea_bot_login.casefold()
        self._rules: dict[str, Callable[..., _Decision]] = {
            "review_rejected": self._on_rejection,
            "review_approved": self._on_approval,
            "review_comment": lambda *_: _ignored("Review state not actionable"),
            "pr_edited": lambda *_: _ignored("PR edit not actionable"),
            "pr_merged": self._on_merge,
            "pr_closed": self._on_close,
            "pr_reopened": self._on_reopen,
            "pr_opened": self._on_open,
            "pr_synchronized": self._on_open,
            "pr_comment": self._on_comment,
        }

    # Entry points ---------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> PolicyResult:
        """Dedupe, decide and record a delivery in one committed transaction."""
        try:
            with self.webhook_db.transaction() as session:
                return self._process(session, delivery)
        except IntegrityError:
            # The same delivery id committed by a concurrent request between our
            # check and our insert; decided again, it is now that one's duplicate.
            with self.webhook_db.transaction() as session:
                return self._process(session, delivery)

    def dry_run(self, delivery: Delivery) -> PolicyResult:
        """Decide as `handle` would, roll everything back, keep one `dry_run` row."""
        with self.webhook_db.transaction() as session:
            savepoint = session.begin_nested()
            result = self._process(session, delivery)
            savepoint.rollback()
            session.add(
                _event_row(delivery, "dry_run", {**result.response(), "dry_run": True})
            )
        return result

    def record_failure(self, delivery: Delivery, error: str) -> None:
        """Keep a `failed` row for a delivery whose policy raised (WH-1 step 8);
        a redelivery reprocesses it in place."""
        result = {
            "status": "failed",
            "delivery_id": delivery.delivery_id,
            "error": error,
        }
        with self.webhook_db.transaction() as session:
            row = _row_by_delivery_id(session, delivery.delivery_id)
            if row is None:
                session.add(_event_row(delivery, "failed", result))
            elif row.status == "failed":
                row.result = dump_json(result)

    # The transaction ------------------------------------------------------------------

    def _process(self, session: Session, delivery: Delivery) -> PolicyResult:
        found = delivery.normalised
        cycle = _lock_cycle(session, found) if found.pr_key else None

        previous = _row_by_delivery_id(session, delivery.delivery_id)
        if previous is not None and previous.status != "failed":
            # A redelivery of a delivery we already answered: nothing new to record.
            original = _original_of(previous)
            return self._duplicate(delivery, original)

        original_row = _row_by_body(session, delivery)
        if original_row is not None:
            result = self._duplicate(delivery, original_row.delivery_id)
            _save_event_row(session, delivery, previous, result)
            return result

        decision = self._decide(session, found, cycle, delivery.delivery_id)
        add_rows(session, decision.rows)
        result = PolicyResult(
            decision.status,
            delivery.delivery_id,
            found.event,
            decision.actions,
            decision.message,
            [*_delivery_events(delivery, decision), *decision.events],
        )
        _save_event_row(session, delivery, previous, result)
        return result

    def _duplicate(self, delivery: Delivery, original_id: str) -> PolicyResult:
        found = delivery.normalised
        data = {**_delivery_data(delivery), "original_delivery_id": original_id}
        return PolicyResult(
            "duplicate",
            delivery.delivery_id,
            found.event,
            [],
            f"Duplicate of delivery {original_id}",
            [
                ("delivery_received", _delivery_data(delivery)),
                ("delivery_duplicate", data),
            ],
            original_id,
        )

    def _decide(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle | None,
        delivery_id: str,
    ) -> _Decision:
        rule = self._rules.get(found.event or "")
        if rule is None or cycle is None:
            return _ignored(found.ignored_message or "Event not actionable")
        if found.head_sha and found.event in HEAD_EVENTS:
            cycle.head_sha = found.head_sha[:64]
        decision = rule(session, found, cycle, delivery_id)
        cycle.updated_at = utcnow()
        return decision

    # Rules ----------------------------------------------------------------------------

    def _is_bot(self, found: NormalisedDelivery) -> bool:
        return found.sender is not None and found.sender.casefold() == self.bot_login

    def _review_not_counted(
        self, found: NormalisedDelivery, cycle: PrReviewCycle, kind: str
    ) -> _Decision | None:
        """Reviews by the bot, or on a closed cycle, change nothing (WH-7)."""
        number, action = cycle.pr_number, f"{kind}_ignored"
        if self._is_bot(found):
            return _ignored(f"PR #{number} {kind} by the bot ignored", action)
        if cycle.status in CLOSED_CYCLE:
            return _ignored(
                f"PR #{number} {kind} ignored: cycle is {cycle.status}", action
            )
        return None

    def _on_rejection(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        number = cycle.pr_number
        skipped = self._review_not_counted(found, cycle, "rejection")
        if skipped is not None:
            return skipped

        count = cycle.cycle_count + 1
        cycle.cycle_count = count
        session.add(
            ReviewFailure(
                pr_key=cycle.pr_key,
                cycle_number=count,
                reviewer=found.reviewer,
                reason=found.reason,
                delivery_id=delivery_id,
                created_at=utcnow(),
            )
        )
        session.flush()
        decision = _Decision(
            "accepted",
            f"PR #{number} rejected (cycle {count}/{self.reject_at})",
            ["cycle_incremented"],
            events=[
                (
                    "review_cycle_incremented",
                    {
                        "pr_key": cycle.pr_key,
                        "cycle": count,
                        "reviewer": found.reviewer,
                    },
                )
            ],
        )
        pr = _pull(found)
        if count >= self.reject_at:
            self._reject(session, decision, found, cycle, pr, delivery_id)
        elif count == self.escalate_at:
            cycle.status = "escalated"
            key = f"{delivery_id}:comment"
            text = messages.escalation_comment(
                number, self.escalate_at, self.reject_at, key
            )
            decision.rows.append(comment_row(pr, text, key, delivery_id))
            decision.actions.append("escalation_comment_queued")
            decision.events.append(
                ("pr_escalated", {"pr_key": cycle.pr_key, "cycle": count})
            )
            decision.message = f"PR #{number} escalated to architect"
        return decision

    def _reject(
        self,
        session: Session,
        decision: _Decision,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        pr: PullRef,
        delivery_id: str,
    ) -> None:
        """The R-th rejection: close, explain, and open the requirements issue."""
        number, limit = cycle.pr_number, self.reject_at
        rejections = session.scalars(
            select(ReviewFailure)
            .where(ReviewFailure.pr_key == cycle.pr_key)
            .order_by(ReviewFailure.cycle_number)
        ).all()
        comment_key = f"{delivery_id}:comment"
        issue_key = f"{delivery_id}:create_requirements_issue"
        decision.rows += [
            close_pr_row(pr, f"{delivery_id}:close_pr", delivery_id),
            comment_row(
                pr,
                messages.final_rejection_comment(number, limit, comment_key),
                comment_key,
                delivery_id,
            ),
            requirements_issue_row(
                pr,
                messages.requirements_issue_title(number, limit),
                messages.requirements_issue_body(
                    number,
                    limit,
                    cast(Sequence[messages.RecordedRejection], rejections),
                    issue_key,
                    found.title,
                ),
                issue_key,
                delivery_id,
            ),
        ]
        cycle.status = "rejected"
        decision.actions += [
            "pr_close_queued",
            "rejection_comment_queued",
            "requirements_issue_queued",
        ]
        decision.events.append(
            ("pr_rejected", {"pr_key": cycle.pr_key, "cycle": cycle.cycle_count})
        )
        decision.message = f"PR #{number} auto-rejected after {limit} cycles"

    def _on_approval(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        number = cycle.pr_number
        skipped = self._review_not_counted(found, cycle, "approval")
        if skipped is not None:
            return skipped
        row = merge_row(
            _pull(found), found.head_sha, f"{delivery_id}:merge", delivery_id
        )
        return _Decision(
            "accepted",
            f"PR #{number} approved, merge queued",
            ["merge_queued"],
            [row],
            [
                (
                    "pr_merge_requested",
                    {"pr_key": cycle.pr_key, "head_sha": found.head_sha},
                )
            ],
        )

    def _on_merge(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        # The bot's own merges count: the bot is normally the one merging.
        number = cycle.pr_number
        if cycle.status == "merged":
            # A second merge signal for one PR (Gitea and Forgejo hooks on the same
            # repository, say) must not deploy the sandbox a second time.
            return _ignored(f"PR #{number} merge already recorded")
        cycle.status = "merged"

        rock_id = pr_sandbox_key(cycle.repo_full_name, number)
        sandbox_id = pr_sandbox_id(cycle.repo_full_name, number)
        phase = start_phase(
            session,
            self.settings,
            rock_id=rock_id,
            pr_key=cycle.pr_key,
            sandbox_id=sandbox_id,
        )
        job = {
            "kind": "sandbox_deploy",
            "sandbox_id": sandbox_id,
            "params": {
                "rock_id": rock_id,
                "tech_stack": self.settings.sandbox_tech_stack,
                "clone_url": found.clone_url,
                "commit_sha": found.merge_commit_sha,
                "repo_full_name": found.repo_full_name,
                "pr_number": number,
                "pr_key": cycle.pr_key,
            },
        }
        decision = _Decision(
            "accepted",
            f"PR #{number} merged, sandbox deployment queued",
            ["cycle_merged", "sandbox_deploy_queued"],
            [
                runtime_row(
                    "runtime_sandbox_job",
                    f"sandbox:{sandbox_id}",
                    job,
                    f"{delivery_id}:runtime_sandbox_job",
                    delivery_id,
                )
            ],
            [
                (
                    "pr_merged",
                    {"pr_key": cycle.pr_key, "merged_by": found.merged_by or "unknown"},
                )
            ],
        )
        if phase is not None:
            decision.events.append(
                (
                    "bug_fix_phase_started",
                    {"rock_id": rock_id, "ends_at": phase.ends_at},
                )
            )
        return decision

    def _on_close(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        number = cycle.pr_number
        if self._is_bot(found) or cycle.status not in OPEN_CYCLE:
            return _ignored(f"PR #{number} close not actionable")
        cycle.status = "closed"
        return _Decision("accepted", f"PR #{number} closed", ["cycle_closed"])

    def _on_reopen(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        reopened = cycle.status == "closed"
        if reopened:
            cycle.status = "active"
        decision = self._on_open(session, found, cycle, delivery_id)
        if reopened:
            decision.actions.insert(0, "cycle_reopened")
            decision.status = "accepted"
        return decision

    def _on_open(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        """PR opened, reopened or synchronised: put the referenced card in review."""
        number = cycle.pr_number
        if found.card_ref is None:
            return _ignored("No issue ID found in PR title")
        card = self._find_card(found.card_ref)
        if card is None:
            return _ignored(f"Card {found.card_ref} not found", "card_not_found")
        if card.status in TERMINAL_STATUSES:
            return _ignored(f"Card {card.id} is {card.status}; no review triggered")

        decision = _Decision("accepted", f"PR #{number} review triggered for {card.id}")
        params = {"card_id": card.id, "pr_key": cycle.pr_key}
        target = f"card:{card.id}"
        if card.status in MOVABLE_TO_REVIEW:
            decision.rows.append(
                runtime_row(
                    "runtime_card_move",
                    target,
                    params,
                    f"{delivery_id}:runtime_card_move",
                    delivery_id,
                )
            )
            decision.actions.append("card_to_code_review")
        if self._build_is_busy(card.build_id):
            decision.actions.append("review_run_skipped_active")
        else:
            decision.rows.append(
                runtime_row(
                    "runtime_queue_run",
                    target,
                    params,
                    f"{delivery_id}:runtime_queue_run",
                    delivery_id,
                )
            )
            decision.actions.append("review_run_queued")
        return decision

    def _on_comment(
        self,
        session: Session,
        found: NormalisedDelivery,
        cycle: PrReviewCycle,
        delivery_id: str,
    ) -> _Decision:
        if self._is_bot(found):
            return _ignored("Comment by the bot ignored")
        if found.card_ref is None:
            return _ignored("No issue ID found in PR title")
        card = self._find_card(found.card_ref)
        if card is None:
            return _ignored(f"Card {found.card_ref} not found", "card_not_found")

        content = f"[gitea] {found.sender or 'unknown'}: {found.comment_body or ''}"
        row = runtime_row(
            "runtime_comment",
            f"card:{card.id}",
            {"card_id": card.id, "author": "gitea", "content": content},
            f"{delivery_id}:runtime_comment",
            delivery_id,
        )
        return _Decision(
            "accepted", f"Comment added to {card.id}", ["card_comment_added"], [row]
        )

    # Runtime reads --------------------------------------------------------------------

    def _find_card(self, reference: str) -> Issue | None:
        """The card a PR title names: the whole reference, then the part after
        `ISSUE-` (cards seeded from epics have ids like `DEMO-1`)."""
        with self.runtime_db.reader() as session:
            for card_id in card_id_candidates(reference):
                card = session.get(Issue, card_id)
                if card is not None:
                    return card
        return None

    def _build_is_busy(self, build_id: str) -> bool:
        with self.runtime_db.reader() as session:
            return active_build_conflict(session, [build_id]) is not None


def reset_cycle(webhook_db: Database, pr_key: str) -> tuple[str, int]:
    """Put a PR's cycle back to `active` with no rejections counted (CLI).

    Its `review_failures` go too: the next rejection is cycle 1 again. Returns the
    previous status and count.
    """
    with webhook_db.transaction() as session:
        cycle = session.scalars(
            select(PrReviewCycle)
            .where(PrReviewCycle.pr_key == pr_key)
            .with_for_update()
        ).first()
        if cycle is None:
            raise LookupError(f"No review cycle for {pr_key}")
        previous = (cycle.status, cycle.cycle_count)
        session.execute(delete(ReviewFailure).where(ReviewFailure.pr_key == pr_key))
        cycle.status = "active"
        cycle.cycle_count = 0
        cycle.updated_at = utcnow()
    return previous


# Rows and locks -----------------------------------------------------------------------


def _lock_cycle(session: Session, found: NormalisedDelivery) -> PrReviewCycle:
    """Create the PR's cycle row if absent and lock it for this transaction."""
    now = utcnow()
    table = PrReviewCycle.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(table)
        .values(
            pr_key=found.pr_key,
            repo_full_name=found.repo_full_name,
            pr_number=found.pr_number,
            cycle_count=0,
            status="active",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    query = (
        select(PrReviewCycle)
        .where(PrReviewCycle.pr_key == found.pr_key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one()


def _row_by_delivery_id(session: Session, delivery_id: str) -> WebhookEvent | None:
    query = select(WebhookEvent).where(WebhookEvent.delivery_id == delivery_id)
    return session.scalars(query).first()


def _row_by_body(session: Session, delivery: Delivery) -> WebhookEvent | None:
    """The earliest counted delivery with the same signed bytes, under another id."""
    query = (
        select(WebhookEvent)
        .where(WebhookEvent.body_sha256 == delivery.body_sha256)
        .where(WebhookEvent.status.in_(COUNTED_STATUSES))
        .where(WebhookEvent.delivery_id != delivery.delivery_id)
        .order_by(WebhookEvent.id)
        .limit(1)
    )
    return session.scalars(query).first()


def _original_of(row: WebhookEvent) -> str:
    """The delivery a stored row stands for: itself, or the one it duplicated."""
    if row.status == "duplicate":
        original = load_json(row.result, {}).get("original_delivery_id")
        if isinstance(original, str):
            return original
    return row.delivery_id


def _save_event_row(
    session: Session,
    delivery: Delivery,
    previous: WebhookEvent | None,
    result: PolicyResult,
) -> None:
    """Insert the delivery's row, or rewrite its `failed` row in place."""
    body = result.response()
    if result.original_delivery_id:
        body["original_delivery_id"] = result.original_delivery_id
    if previous is None:
        session.add(_event_row(delivery, result.status, body))
        session.flush()
        return
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == previous.id)
        .values(
            status=result.status,
            result=dump_json(body),
            payload=delivery.payload_text,
            body_sha256=delivery.body_sha256,
        )
    )


def _event_row(delivery: Delivery, status: str, result: dict[str, Any]) -> WebhookEvent:
    found = delivery.normalised
    return WebhookEvent(
        delivery_id=delivery.delivery_id,
        event_type=found.event_type[:64],
        action=found.action[:64] if found.action else None,
        repo_full_name=found.repo_full_name,
        pr_number=found.pr_number,
        pr_key=found.pr_key,
        body_sha256=delivery.body_sha256,
        signature_ok=True,
        status=status,
        result=dump_json(result),
        payload=delivery.payload_text,
        created_at=utcnow(),
    )


def _delivery_data(delivery: Delivery) -> dict[str, Any]:
    found = delivery.normalised
    return {
        "delivery_id": delivery.delivery_id,
        "event_type": found.event_type,
        "repo": found.repo_full_name,
        "pr_number": found.pr_number,
    }


def _delivery_events(
    delivery: Delivery, decision: _Decision
) -> list[tuple[str, dict[str, Any]]]:
    """`delivery_received`, plus `delivery_ignored` for an event type we do not
    handle at all (WH-1 step 7); rules that decide to do nothing say so in the
    response and the stored row instead."""
    data = _delivery_data(delivery)
    events = [("delivery_received", data)]
    if delivery.normalised.event is None:
        events.append(("delivery_ignored", {**data, "message": decision.message}))
    return events


def _pull(found: NormalisedDelivery) -> PullRef:
    return PullRef(found.owner or "", found.repo_name or "", found.pr_number)
