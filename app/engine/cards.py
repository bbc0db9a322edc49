"""The card repository: every read and write of `issues`, `comments` and
`card_transactions` the engine makes (ENG-3, ENG-4).

Writes are UPDATEs of named columns, never a full-row replace, so a write can only
touch what it names. A status write checks the stored status inside its own write
transaction, appends a `card_transactions` line and, once committed, emits
`card_status_changed`. Events are always emitted after the transaction ends, because
an event is its own short write.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from app.db import Database
from app.engine.state_machine import ENGINE_MOVES, WAITING_STATUSES, is_engine_move
from app.events import EventLog
from app.models.base import dump_json, load_json, utcnow
from app.models.runtime import CardTransaction, Comment, Issue

SYSTEM = "system"
# A status check runs on the freshly read row inside the write transaction and
# returns the reason the change is refused, or None.
StatusCheck = Callable[[Issue], "str | None"]


class CardNotFound(LookupError):
    pass


@dataclass(frozen=True)
class StatusChange:
    """What a status write did: `error` is set when it was refused."""

    card_id: str
    from_status: str | None
    to_status: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def engine_move(move: str) -> StatusCheck:
    """A check allowing exactly one named engine move of the state machine."""

    def check(card: Issue) -> str | None:
        if is_engine_move(card.status, ENGINE_MOVES[move][1], move):
            return None
        return f"Engine move '{move}' not possible from {card.status}"

    return check


def new_child_id() -> str:
    """`ISSUE-` + 8 upper-case hex characters."""
    return "ISSUE-" + secrets.token_hex(4).upper()


def depends_on(card: Issue) -> list[str]:
    return [str(item) for item in load_json(card.depends_on_json, [])]


def verification_of(card: Issue) -> dict[str, Any] | None:
    value = load_json(card.verification_json, {})
    return value or None


def has_fixture(card: Issue) -> bool:
    verification = verification_of(card) or {}
    return bool(verification.get("fixture_path"))


def latest_verification(card: Issue) -> dict[str, Any] | None:
    last = (verification_of(card) or {}).get("last_run")
    return last if isinstance(last, dict) else None


class CardRepository:
    """Card reads and writes for one database and event log."""

    def __init__(self, db: Database, events: EventLog) -> None:
        self.db = db
        self.events = events

    # Reads ----------------------------------------------------------------------

    def get(self, card_id: str) -> Issue | None:
        with self.db.reader() as session:
            return session.get(Issue, card_id)

    def require(self, card_id: str) -> Issue:
        card = self.get(card_id)
        if card is None:
            raise CardNotFound(card_id)
        return card

    def many(self, card_ids: Iterable[str]) -> dict[str, Issue]:
        wanted = list(dict.fromkeys(card_ids))
        if not wanted:
            return {}
        with self.db.reader() as session:
            rows = session.scalars(select(Issue).where(Issue.id.in_(wanted))).all()
        return {row.id: row for row in rows}

    def in_build(self, build_id: str, epic_id: str | None = None) -> list[Issue]:
        """Cards of a build (of one epic when given), by `created_at`, `id`."""
        query = select(Issue).where(Issue.build_id == build_id)
        if epic_id is not None:
            query = query.where(Issue.epic_id == epic_id)
        with self.db.reader() as session:
            return list(session.scalars(query.order_by(Issue.created_at, Issue.id)))

    def comments(self, card_id: str) -> list[Comment]:
        with self.db.reader() as session:
            query = (
                select(Comment)
                .where(Comment.issue_id == card_id)
                .order_by(Comment.created_at, Comment.id)
            )
            return list(session.scalars(query))

    def with_context(
        self, card_id: str
    ) -> tuple[Issue | None, dict[str, str], list[Comment]]:
        """A card, the statuses of its dependencies and its comments, in one read."""
        with self.db.reader() as session:
            card = session.get(Issue, card_id)
            if card is None:
                return None, {}, []
            wanted = depends_on(card)
            statuses: dict[str, str] = {}
            if wanted:
                query = select(Issue.id, Issue.status).where(Issue.id.in_(wanted))
                statuses = {row.id: row.status for row in session.execute(query)}
            comments = session.scalars(
                select(Comment)
                .where(Comment.issue_id == card_id)
                .order_by(Comment.created_at, Comment.id)
            )
            return card, statuses, list(comments)

    def count_children(self, session_id: str) -> int:
        with self.db.reader() as session:
            query = select(func.count()).where(
                Issue.session_id == session_id, Issue.id.like("ISSUE-%")
            )
            return int(session.scalar(query) or 0)

    # Writes ---------------------------------------------------------------------

    def insert(
        self, cards: list[Issue], *, run_id: str | None, role: str = SYSTEM
    ) -> None:
        """Insert new cards and emit `card_created` for each."""
        if not cards:
            return
        with self.db.transaction() as session:
            session.add_all(cards)
        for card in cards:
            self.events.emit(
                "card_created",
                {
                    "issue_id": card.id,
                    "parent_id": card.parent_id,
                    "build_id": card.build_id,
                    "summary": card.summary,
                },
                role=role,
                run_id=run_id,
                card_id=card.id,
            )

    def update_fields(self, card_id: str, **values: Any) -> None:
        """Write the named columns (never the status) and move `updated_at`."""
        if "status" in values:
            raise ValueError("status changes go through set_status")
        with self.db.transaction() as session:
            session.execute(
                update(Issue)
                .where(Issue.id == card_id)
                .values(**values, updated_at=utcnow())
            )

    def set_status(
        self,
        card_id: str,
        to_status: str,
        *,
        check: StatusCheck,
        by: str = SYSTEM,
        role: str = SYSTEM,
        event_role: str | None = None,
        wait_reason: str | None = None,
        run_id: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> StatusChange:
        """Change a card's status if `check` allows it on the stored row.

        `by` is the seat (or `system`) shown in the event, `role` the history line's
        role; `values` are further columns written in the same UPDATE.
        """
        with self.db.transaction() as session:
            card = _locked(session, card_id, self.db.is_postgresql)
            if card is None:
                return StatusChange(
                    card_id, None, to_status, f"Card {card_id} not found"
                )
            from_status = card.status
            error = check(card)
            if error:
                return StatusChange(card_id, from_status, to_status, error)
            reason = wait_reason if to_status in WAITING_STATUSES else None
            session.execute(
                update(Issue)
                .where(Issue.id == card_id)
                .values(
                    status=to_status,
                    wait_reason=reason,
                    updated_at=utcnow(),
                    **(values or {}),
                )
            )
            session.execute(
                insert(CardTransaction).values(
                    card_id=card_id,
                    role=role,
                    action=f"Set Status to '{to_status}'",
                    from_status=from_status,
                    to_status=to_status,
                    timestamp=utcnow(),
                )
            )
        self.events.emit(
            "card_status_changed",
            {
                "issue_id": card_id,
                "from": from_status,
                "to": to_status,
                "by": by,
                "wait_reason": reason,
            },
            role=event_role or role,
            run_id=run_id,
            card_id=card_id,
        )
        return StatusChange(card_id, from_status, to_status)

    def move(
        self,
        card_id: str,
        move: str,
        *,
        run_id: str | None,
        wait_reason: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> StatusChange:
        """One of the engine's own moves (role `system`, no agent checks)."""
        return self.set_status(
            card_id,
            ENGINE_MOVES[move][1],
            check=engine_move(move),
            wait_reason=wait_reason,
            run_id=run_id,
            values=values,
        )

    def add_comment(
        self,
        card_id: str,
        author: str,
        content: str,
        *,
        run_id: str | None,
        role: str = SYSTEM,
    ) -> int:
        with self.db.transaction() as session:
            comment = Comment(
                issue_id=card_id, author=author, content=content, created_at=utcnow()
            )
            session.add(comment)
            session.flush()
            comment_id = comment.id
            session.execute(
                update(Issue).where(Issue.id == card_id).values(updated_at=utcnow())
            )
        self.events.emit(
            "card_comment_added",
            {"issue_id": card_id, "author": author},
            role=role,
            run_id=run_id,
            card_id=card_id,
        )
        return comment_id

    def add_retry(self, card_id: str) -> int:
        """Increment `retry_count` and return the new value."""
        with self.db.transaction() as session:
            session.execute(
                update(Issue)
                .where(Issue.id == card_id)
                .values(retry_count=Issue.retry_count + 1, updated_at=utcnow())
            )
            return int(
                session.scalar(select(Issue.retry_count).where(Issue.id == card_id))
                or 0
            )


def _locked(session: Any, card_id: str, row_lock: bool) -> Issue | None:
    # SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL needs the row
    # lock so two status writes cannot both pass their check on the same old status.
    query = select(Issue).where(Issue.id == card_id)
    if row_lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def new_card(
    *,
    card_id: str,
    build_id: str,
    epic_id: str | None,
    seat: str,
    summary: str,
    sprint: str,
    created_at: datetime,
    session_id: str | None = None,
    parent_id: str | None = None,
    type: str = "issue",
    priority: float = 2.0,
    note: str | None = None,
    description: str | None = None,
    requirements: str | None = None,
    max_retries: int = 3,
    depends_on: list[str] | None = None,
    verification: dict[str, Any] | None = None,
) -> Issue:
    """A new `ready` card row."""
    return Issue(
        id=card_id,
        session_id=session_id,
        build_id=build_id,
        epic_id=epic_id,
        parent_id=parent_id,
        seat=seat,
        summary=summary,
        type=type,
        priority=str(float(priority)),
        sprint=sprint,
        status="ready",
        note=note,
        description=description,
        requirements=requirements,
        max_retries=max_retries,
        retry_count=0,
        credits_spent=0.0,
        depends_on_json=dump_json(depends_on or []),
        verification_json=dump_json(verification) if verification else None,
        created_at=created_at,
        updated_at=created_at,
    )
