"""The outbox: calls owed to Gitea and writes owed to the runtime database (WH-8, WH-9).

The review policy never calls anything: it inserts `gitea_outbox` rows in the same
transaction as its decision, so a delivery is answered at once and nothing it owes
is lost when the process dies. One worker thread (`OutboxWorker`) works the rows:

* it claims a due `pending` row by moving `next_attempt_at` one lease ahead and
  counting the attempt, so a row whose worker died becomes due again by itself;
* rows of one delivery run strictly in id order (close before the final comment,
  card move before the review run);
* the outcome of each attempt is recorded in its own short transaction, never
  while a Gitea call is in flight.

Gitea rows (`comment`, `close_pr`, `create_requirements_issue`, `merge`) are executed
by `app.webhook.gitea_calls`, runtime rows (`runtime_*`) by
`app.webhook.runtime_writes`. Without Gitea credentials the Gitea rows wait, their
attempts untouched, while runtime rows still run.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import quote, unquote

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from app.config import Settings
from app.db import Database
from app.events import EventLog
from app.gitea import API_PREFIX, GiteaClient, merge_request_body
from app.models.base import dump_json, isoformat, load_json, utcnow
from app.models.webhook import GiteaOutbox, PrReviewCycle
from app.webhook.messages import merge_failure_comment

log = logging.getLogger(__name__)

ROLE = "webhook"

GITEA_KINDS = ("comment", "close_pr", "create_requirements_issue", "merge")
RUNTIME_KINDS = (
    "runtime_card_move",
    "runtime_queue_run",
    "runtime_sandbox_job",
    "runtime_comment",
)
RUNTIME_METHOD = "RUNTIME"
REQUIREMENTS_LABELS = (
    {
        "name": "requirements-review",
        "color": "#0075ca",
        "description": "Review cycle exhausted; the requirements need another look",
    },
    {
        "name": "auto-rejected",
        "color": "#e11d21",
        "description": "Closed automatically after repeated change requests",
    },
)
RETRYABLE_STATUSES = frozenset({"failed", "dead"})
BATCH_SIZE = 50
JITTER = 0.2

_PR_PATH = re.compile(
    r"^/api/v1/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?:issues|pulls)"
    r"(?:/(?P<number>\d+))?(?:/.*)?$"
)


@dataclass(frozen=True)
class PullRef:
    """A pull request (or, without a number, its repository) on Gitea."""

    owner: str
    repo: str
    number: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def pr_key(self) -> str:
        return f"{self.full_name}#{self.number}"

    @classmethod
    def from_path(cls, path: str) -> PullRef:
        """The PR an outbox path is about; raises ValueError for other paths."""
        match = _PR_PATH.match(path)
        if match is None:
            raise ValueError(f"not a repository issue or pull path: {path}")
        number = match.group("number")
        return cls(
            unquote(match.group("owner")),
            unquote(match.group("repo")),
            int(number) if number else None,
        )

    def api_path(self, suffix: str) -> str:
        # The Gitea client builds the real request paths; this one is for people
        # reading `outbox show` and for `from_path`.
        owner, repo = quote(self.owner, safe=""), quote(self.repo, safe="")
        return f"{API_PREFIX}/repos/{owner}/{repo}{suffix}"


@dataclass(frozen=True)
class MergeProblem:
    """Why an approved PR did not merge, for the comment and `pr_merge_failed`."""

    status: int
    message: str
    close_cycle: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one attempt at a row came to.

    `result` is `done`, `retry` (a transient failure: back off, or die after the last
    attempt) or `failed` (final). `detail` is the error, or for `done` a note such as
    "comment was already posted"; it is kept in `last_error` for `outbox show`. A
    `merge_problem` on a `retry` turns the last attempt into `failed` plus an
    explanatory comment instead of `dead`.
    """

    result: str
    status: int | None = None
    detail: str | None = None
    merge_problem: MergeProblem | None = None

    @classmethod
    def done(cls, status: int | None = None, note: str | None = None) -> Outcome:
        return cls("done", status, note)


# Building rows ------------------------------------------------------------------------


def comment_row(
    pr: PullRef, text: str, dedupe_key: str, delivery_id: str | None
) -> GiteaOutbox:
    """A PR comment; `text` must end with the marker of `dedupe_key` (messages.py)."""
    return _row(
        "comment",
        "POST",
        pr.api_path(f"/issues/{pr.number}/comments"),
        {"body": text},
        dedupe_key,
        delivery_id,
    )


def close_pr_row(pr: PullRef, dedupe_key: str, delivery_id: str | None) -> GiteaOutbox:
    return _row(
        "close_pr",
        "PATCH",
        pr.api_path(f"/pulls/{pr.number}"),
        {"state": "closed"},
        dedupe_key,
        delivery_id,
    )


def merge_row(
    pr: PullRef, head_sha: str | None, dedupe_key: str, delivery_id: str | None
) -> GiteaOutbox:
    """The merge, pinned to the approved head when the delivery named it."""
    assert pr.number is not None
    return _row(
        "merge",
        "POST",
        pr.api_path(f"/pulls/{pr.number}/merge"),
        merge_request_body(pr.number, head_sha),
        dedupe_key,
        delivery_id,
    )


def requirements_issue_row(
    pr: PullRef, title: str, text: str, dedupe_key: str, delivery_id: str | None
) -> GiteaOutbox:
    """The requirements issue. Its labels are stored by name and resolved to ids
    (created when missing) only when the row runs, since Gitea takes ids only."""
    body = {"title": title, "body": text, "labels": list(REQUIREMENTS_LABELS)}
    return _row(
        "create_requirements_issue",
        "POST",
        pr.api_path("/issues"),
        body,
        dedupe_key,
        delivery_id,
    )


def runtime_row(
    kind: str,
    target: str,
    params: dict[str, Any],
    dedupe_key: str,
    delivery_id: str | None,
) -> GiteaOutbox:
    """A write owed to the runtime database; `target` names what it touches."""
    if kind not in RUNTIME_KINDS:
        raise ValueError(f"not a runtime outbox kind: {kind}")
    return _row(kind, RUNTIME_METHOD, target, params, dedupe_key, delivery_id)


def _row(
    kind: str,
    method: str,
    path: str,
    body: dict[str, Any],
    dedupe_key: str,
    delivery_id: str | None,
) -> GiteaOutbox:
    now = utcnow()
    return GiteaOutbox(
        delivery_id=delivery_id,
        dedupe_key=dedupe_key,
        kind=kind,
        method=method,
        path=path,
        body=dump_json(body),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def add_rows(session: Session, rows: Sequence[GiteaOutbox]) -> list[GiteaOutbox]:
    """Insert rows inside the caller's transaction, skipping dedupe keys already
    owed; returns the rows actually added."""
    if not rows:
        return []
    keys = [row.dedupe_key for row in rows]
    taken = set(
        session.scalars(
            select(GiteaOutbox.dedupe_key).where(GiteaOutbox.dedupe_key.in_(keys))
        )
    )
    fresh = [row for row in rows if row.dedupe_key not in taken]
    session.add_all(fresh)
    session.flush()
    return fresh


def queue_comment(
    webhook_db: Database,
    *,
    owner: str,
    repo: str,
    number: int,
    text: str,
    dedupe_key: str,
) -> bool:
    """Owe a PR comment from outside a delivery (the sandbox job's URLs comment,
    dedupe key `sandbox:<id>`). False when that key is already owed."""
    row = comment_row(PullRef(owner, repo, number), text, dedupe_key, None)
    table = GiteaOutbox.__table__
    values = {column.name: getattr(row, column.name) for column in table.columns}
    values.pop("id")
    dialect = postgresql if webhook_db.is_postgresql else sqlite
    statement = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(table.c.id)
    )
    with webhook_db.transaction() as session:
        return session.execute(statement).first() is not None


# Reading and retrying rows (CLI) ------------------------------------------------------


def list_rows(
    webhook_db: Database, status: str | None = None, limit: int = 100
) -> list[GiteaOutbox]:
    query = select(GiteaOutbox).order_by(GiteaOutbox.id.desc()).limit(limit)
    if status:
        query = query.where(GiteaOutbox.status == status)
    with webhook_db.reader() as session:
        return list(session.scalars(query))


def get_row(webhook_db: Database, row_id: int) -> GiteaOutbox | None:
    with webhook_db.reader() as session:
        return session.get(GiteaOutbox, row_id)


class NotRetryable(Exception):
    """Only `failed` and `dead` rows can be retried."""


def retry_row(webhook_db: Database, row_id: int) -> GiteaOutbox:
    """Put a `failed` or `dead` row back to `pending` with its attempts reset."""
    now = utcnow()
    with webhook_db.transaction() as session:
        row = session.get(GiteaOutbox, row_id, with_for_update=True)
        if row is None:
            raise LookupError(f"Outbox row {row_id} not found")
        if row.status not in RETRYABLE_STATUSES:
            raise NotRetryable(
                f"Outbox row {row_id} is {row.status}; only failed or dead rows "
                "can be retried"
            )
        row.status = "pending"
        row.attempts = 0
        row.next_attempt_at = now
        row.updated_at = now
        return row


def row_to_dict(row: GiteaOutbox) -> dict[str, Any]:
    return {
        "id": row.id,
        "delivery_id": row.delivery_id,
        "dedupe_key": row.dedupe_key,
        "kind": row.kind,
        "method": row.method,
        "path": row.path,
        "body": load_json(row.body, {}),
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": isoformat(row.next_attempt_at),
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


def status_counts(webhook_db: Database) -> list[tuple[str, str, int]]:
    """(status, kind, rows) for `/metrics`."""
    query = select(GiteaOutbox.status, GiteaOutbox.kind, func.count()).group_by(
        GiteaOutbox.status, GiteaOutbox.kind
    )
    with webhook_db.reader() as session:
        return [(status, kind, count) for status, kind, count in session.execute(query)]


# The worker ---------------------------------------------------------------------------


def backoff_seconds(
    attempts: int, max_sec: float, rng: Callable[[], float] = random.random
) -> float:
    """`min(2^attempts, max) ± 20 %`: spreads retries of many rows apart."""
    base = min(2.0 ** max(attempts, 0), max_sec)
    return base * (1 + JITTER * (2 * rng() - 1))


class OutboxWorker:
    """The one thread that works the outbox (WH-9) and ends bug-fix phases (WH-12)."""

    def __init__(
        self,
        settings: Settings,
        webhook_db: Database,
        runtime_db: Database,
        events: EventLog,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        # Imported here: the executors build on this module's Outcome and PullRef.
        from app.webhook.gitea_calls import GiteaCalls
        from app.webhook.runtime_writes import RuntimeWrites

        self.settings = settings
        self.webhook_db = webhook_db
        self.events = events
        self._client = GiteaClient.from_settings(settings)
        self._gitea = GiteaCalls(self._client)
        self._runtime = RuntimeWrites(settings, runtime_db, events)
        self._rng = rng
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_bugfix_check = 0.0

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="orket-outbox", daemon=True
        )
        self._thread.start()

    def request_stop(self) -> None:
        """Stop claiming; the row in flight still finishes (PROC-4)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        poll = self.settings.outbox_poll_ms / 1000
        while not self._stop.is_set():
            worked = 0
            try:
                self.check_bugfix_phases_if_due()
                worked = self.run_once()
            except SQLAlchemyError as exc:
                # The database is away; the rows are safe in it. Try again later.
                log.warning("outbox pass failed: %s", type(exc).__name__)
            except Exception:  # noqa: BLE001 - the worker must outlive its own bugs
                log.exception("outbox pass failed")
            if not worked:
                self._wake.wait(poll)
                self._wake.clear()

    # One pass -------------------------------------------------------------------------

    def run_once(self, limit: int = BATCH_SIZE) -> int:
        """Claim and work the rows due now; returns how many were attempted."""
        worked = 0
        for row_id in self._due_ids(limit):
            if self._stop.is_set():
                break
            row = self._claim(row_id)
            if row is None:
                continue
            try:
                outcome = self._execute(row)
            except Exception as exc:  # noqa: BLE001 - one broken row must not stop the rest
                # Recorded as a transient failure, so the row backs off and, if it
                # keeps failing, ends `dead` where an operator sees it.
                self.events.emit_error("outbox", exc)
                outcome = Outcome(
                    "retry", None, f"internal error: {type(exc).__name__}"
                )
            self._record(row, outcome)
            worked += 1
        return worked

    def check_bugfix_phases_if_due(self) -> None:
        """WH-12's periodic check (hourly by default, and once at start)."""
        # Imported here: bug-fix phases owe their sandbox stops through this module.
        from app.webhook.bugfix import complete_expired_phases

        now = time.monotonic()
        if now < self._next_bugfix_check:
            return
        self._next_bugfix_check = now + self.settings.bugfix_check_sec
        complete_expired_phases(self.webhook_db, self.events)

    def _due_ids(self, limit: int) -> list[int]:
        earlier = aliased(GiteaOutbox)
        blocked_by_earlier = exists().where(
            earlier.delivery_id == GiteaOutbox.delivery_id,
            earlier.id < GiteaOutbox.id,
            earlier.status == "pending",
        )
        query = (
            select(GiteaOutbox.id)
            .where(GiteaOutbox.status == "pending")
            .where(GiteaOutbox.next_attempt_at <= utcnow())
            .where(~blocked_by_earlier)
            .order_by(GiteaOutbox.id)
            .limit(limit)
        )
        if not self._client.has_credentials:
            query = query.where(GiteaOutbox.kind.in_(RUNTIME_KINDS))
        with self.webhook_db.reader() as session:
            return list(session.scalars(query))

    def _claim(self, row_id: int) -> GiteaOutbox | None:
        now = utcnow()
        lease = timedelta(seconds=self.settings.outbox_lease_sec)
        with self.webhook_db.transaction() as session:
            claimed = _rowcount(
                session,
                update(GiteaOutbox)
                .where(GiteaOutbox.id == row_id)
                .where(GiteaOutbox.status == "pending")
                .where(GiteaOutbox.next_attempt_at <= now)
                .values(
                    attempts=GiteaOutbox.attempts + 1,
                    next_attempt_at=now + lease,
                    updated_at=now,
                ),
            )
            if claimed != 1:
                return None
            return session.get(GiteaOutbox, row_id)

    def _execute(self, row: GiteaOutbox) -> Outcome:
        if row.kind in RUNTIME_KINDS:
            return self._runtime.execute(row)
        if row.kind in GITEA_KINDS:
            return self._gitea.execute(row)
        return Outcome("failed", detail=f"unknown outbox kind {row.kind}")

    # Recording ------------------------------------------------------------------------

    def _record(self, row: GiteaOutbox, outcome: Outcome) -> None:
        now = utcnow()
        final = outcome.result
        exhausted = row.attempts >= self.settings.outbox_max_attempts
        if final == "retry" and exhausted:
            final = "failed" if outcome.merge_problem else "dead"
        merge_failed = outcome.merge_problem is not None and final == "failed"

        values: dict[str, Any] = {
            "status": "pending" if final == "retry" else final,
            "last_status": outcome.status,
            "last_error": _short(outcome.detail),
            "updated_at": now,
        }
        if final == "retry":
            delay = backoff_seconds(
                row.attempts, self.settings.outbox_backoff_max_sec, self._rng
            )
            values["next_attempt_at"] = now + timedelta(seconds=delay)

        pr = _pull_of(row)
        with self.webhook_db.transaction() as session:
            session.execute(
                update(GiteaOutbox).where(GiteaOutbox.id == row.id).values(**values)
            )
            if merge_failed and pr is not None and outcome.merge_problem:
                self._owe_merge_consequences(session, row, pr, outcome.merge_problem)

        self._emit_outcome(row, outcome, final, pr, merge_failed)
        log.info(
            "outbox row %s (%s, delivery %s) attempt %s: %s",
            row.id,
            row.kind,
            row.delivery_id,
            row.attempts,
            values["status"],
        )

    def _owe_merge_consequences(
        self, session: Session, row: GiteaOutbox, pr: PullRef, problem: MergeProblem
    ) -> None:
        if problem.close_cycle:
            session.execute(
                update(PrReviewCycle)
                .where(PrReviewCycle.pr_key == pr.pr_key)
                .values(status="closed", updated_at=utcnow())
            )
            return
        assert pr.number is not None
        key = _free_key(session, f"{row.delivery_id or row.dedupe_key}:comment")
        text = merge_failure_comment(pr.number, problem.status, problem.message, key)
        add_rows(session, [comment_row(pr, text, key, row.delivery_id)])

    def _emit_outcome(
        self,
        row: GiteaOutbox,
        outcome: Outcome,
        final: str,
        pr: PullRef | None,
        merge_failed: bool,
    ) -> None:
        failure = {
            "outbox_id": row.id,
            "kind": row.kind,
            "status": outcome.status,
            "error": _short(outcome.detail),
            "attempts": row.attempts,
        }
        answered_2xx = outcome.status is not None and 200 <= outcome.status < 300
        if row.kind in GITEA_KINDS and (outcome.result != "done" or not answered_2xx):
            # Every non-2xx answer counts, even a 405 that turned out to mean
            # "already merged".
            self.events.emit("gitea_call_failed", failure, role=ROLE, level="warning")
        if final == "dead":
            self.events.emit("outbox_dead", failure, role=ROLE, level="error")
        if merge_failed and pr is not None and outcome.merge_problem:
            self.events.emit(
                "pr_merge_failed",
                {
                    "pr_key": pr.pr_key,
                    "status": outcome.merge_problem.status,
                    "reason": _short(outcome.merge_problem.message)
                    or f"HTTP {outcome.merge_problem.status}",
                },
                role=ROLE,
                level="warning",
            )


def _pull_of(row: GiteaOutbox) -> PullRef | None:
    if row.kind not in GITEA_KINDS:
        return None
    try:
        return PullRef.from_path(row.path)
    except ValueError:
        return None


def _rowcount(session: Session, statement: Any) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def _free_key(session: Session, base: str) -> str:
    """`base`, or `base:<n>` with the lowest n >= 2 not yet used (a merge retried
    from the CLI can fail twice and deserves a second explanation)."""
    taken = set(
        session.scalars(
            select(GiteaOutbox.dedupe_key).where(
                (GiteaOutbox.dedupe_key == base)
                | GiteaOutbox.dedupe_key.startswith(base + ":")
            )
        )
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}:{n}" in taken:
        n += 1
    return f"{base}:{n}"


def _short(text: str | None, limit: int = 500) -> str | None:
    if text is None:
        return None
    return text.strip()[:limit]


def body_of(row: GiteaOutbox) -> dict[str, Any]:
    """The stored body of a row as an object (empty when absent or corrupt)."""
    return load_json(row.body, {})
