"""Carrying out the runtime rows of the outbox against the runtime database (WH-7).

The policy commits to the webhook database only; what it owes the runtime database
(a card move, a review run, a sandbox job, a card comment) waits here as an outbox
row, so a crash between the two databases loses nothing. Each write is idempotent
for its row: a repeated attempt finds what an earlier, unrecorded attempt did (the
card already in `code_review`, a run or job queued after the row was written, the
same comment) and does not do it again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import Database
from app.engine.cards import CardRepository, engine_move
from app.events import EventLog
from app.models.runtime import Comment, Issue
from app.models.runtime import Session as RunRow
from app.models.webhook import GiteaOutbox
from app.runs import RunConflict, RunRequestError, enqueue_run
from app.sandbox.jobs import SandboxJobConflict, enqueue_sandbox_job
from app.webhook.outbox import ROLE, Outcome, body_of

WEBHOOK_MOVE = "webhook_review"
REVIEW_STATUS = "code_review"
COMMENT_AUTHOR = "gitea"


class RuntimeWrites:
    """Executes `runtime_card_move`, `runtime_queue_run`, `runtime_sandbox_job` and
    `runtime_comment` rows."""

    def __init__(self, settings: Settings, runtime_db: Database, events: EventLog):
        self.settings = settings
        self.db = runtime_db
        self.events = events
        self.cards = CardRepository(runtime_db, events)
        self._handlers: dict[str, Callable[[GiteaOutbox, dict[str, Any]], Outcome]] = {
            "runtime_card_move": self._move_card,
            "runtime_queue_run": self._queue_review_run,
            "runtime_sandbox_job": self._queue_sandbox_job,
            "runtime_comment": self._add_comment,
        }

    def execute(self, row: GiteaOutbox) -> Outcome:
        handler = self._handlers.get(row.kind)
        if handler is None:
            return Outcome("failed", detail=f"not a runtime outbox kind: {row.kind}")
        try:
            return handler(row, body_of(row))
        except SQLAlchemyError as exc:
            # The runtime database is unreachable or busy: transient, like a 5xx.
            return Outcome("retry", detail=f"runtime database: {type(exc).__name__}")
        except KeyError as exc:
            return Outcome("failed", detail=f"malformed outbox row: missing {exc}")

    def _move_card(self, row: GiteaOutbox, params: dict[str, Any]) -> Outcome:
        card_id = params["card_id"]
        change = self.cards.set_status(
            card_id,
            REVIEW_STATUS,
            check=engine_move(WEBHOOK_MOVE),
            by=ROLE,
            role=ROLE,
        )
        if change.from_status is None:
            return Outcome("failed", detail=change.error)
        if not change.ok:
            # Already in review, or moved on since the delivery: nothing to do.
            return Outcome.done(note=f"not moved: {change.error}")
        self.events.emit(
            "card_to_code_review",
            {"issue_id": card_id, "pr_key": params.get("pr_key")},
            role=ROLE,
            card_id=card_id,
        )
        return Outcome.done()

    def _queue_review_run(self, row: GiteaOutbox, params: dict[str, Any]) -> Outcome:
        card_id = params["card_id"]
        if self._run_queued_since(card_id, row.created_at):
            return Outcome.done(note="review run was already queued")
        try:
            run = enqueue_run(
                self.settings,
                self.db,
                self.events,
                target=card_id,
                type="issue",
                source=ROLE,
            )
        except RunConflict as exc:
            return Outcome.done(note=f"skipped: {exc.detail}")
        except RunRequestError as exc:
            return Outcome("failed", detail=exc.detail)
        self.events.emit(
            "review_run_queued",
            {"run_id": run["session_id"], "issue_id": card_id},
            role=ROLE,
            run_id=run["session_id"],
            card_id=card_id,
        )
        return Outcome.done()

    def _queue_sandbox_job(self, row: GiteaOutbox, params: dict[str, Any]) -> Outcome:
        kind, sandbox_id = params["kind"], params["sandbox_id"]
        if self._job_queued_since(kind, sandbox_id, row.created_at):
            return Outcome.done(note=f"{kind} was already queued")
        try:
            enqueue_sandbox_job(
                self.db,
                self.events,
                kind=kind,
                sandbox_id=sandbox_id,
                params=params.get("params") or {},
                source=ROLE,
            )
        except SandboxJobConflict as exc:
            return Outcome.done(note=f"skipped: {exc.detail}")
        except ValueError as exc:
            return Outcome("failed", detail=str(exc))
        return Outcome.done()

    def _add_comment(self, row: GiteaOutbox, params: dict[str, Any]) -> Outcome:
        card_id, content = params["card_id"], params["content"]
        author = params.get("author") or COMMENT_AUTHOR
        if self._comment_exists(card_id, author, content, row.created_at):
            return Outcome.done(note="comment was already added")
        with self.db.reader() as session:
            if session.get(Issue, card_id) is None:
                return Outcome("failed", detail=f"Card {card_id} not found")
        self.cards.add_comment(card_id, author, content, run_id=None, role=ROLE)
        return Outcome.done()

    # Traces of an earlier attempt -----------------------------------------------------

    def _run_queued_since(self, card_id: str, since: datetime) -> bool:
        query = select(RunRow.id).where(
            RunRow.source == ROLE,
            RunRow.type == "issue",
            RunRow.target_id == card_id,
            RunRow.queued_at >= since,
        )
        with self.db.reader() as session:
            return session.scalars(query.limit(1)).first() is not None

    def _job_queued_since(self, kind: str, sandbox_id: str, since: datetime) -> bool:
        query = select(RunRow.id).where(
            RunRow.type == kind,
            RunRow.target_id == sandbox_id,
            RunRow.queued_at >= since,
        )
        with self.db.reader() as session:
            return session.scalars(query.limit(1)).first() is not None

    def _comment_exists(
        self, card_id: str, author: str, content: str, since: datetime
    ) -> bool:
        query = select(Comment.id).where(
            Comment.issue_id == card_id,
            Comment.author == author,
            Comment.content == content,
            Comment.created_at >= since,
        )
        with self.db.reader() as session:
            return session.scalars(query.limit(1)).first() is not None
