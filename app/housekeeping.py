"""The API process's housekeeper (PROC-1, JOB-5, EVT-5).

Every `ORKET_HOUSEKEEPER_SEC`: runs whose heartbeat went stale become `interrupted`
and sandboxes a dead job left `creating`/`stopping` become `failed`. Every
`ORKET_SANDBOX_HEALTH_SEC`: sandbox health checks. Every `ORKET_PRUNE_INTERVAL_SEC`:
event retention, which `orket prune-events` also runs on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from app.config import Settings
from app.db import Database, changed_rows
from app.events import EventLog
from app.jobs import interrupt_job
from app.models.base import load_json, utcnow
from app.models.runtime import SANDBOX_JOB_TYPES, Event, Sandbox
from app.models.runtime import Session as RunRow
from app.models.webhook import GiteaOutbox, WebhookEvent
from app.sandbox import check_sandbox_health
from app.sandbox.ports import PORT_COLUMNS
from app.services import Services

log = logging.getLogger(__name__)

PRUNE_BATCH = 5000
ACTIVE_STATUSES = ("queued", "running")
ABANDONED_SANDBOX_STATUSES = {
    "creating": "sandbox_deploy_failed",
    "stopping": "sandbox_delete_failed",
}


# Stale runs ------------------------------------------------------------------


def interrupt_stale_runs(
    db: Database, events: EventLog, stale_after_sec: float, *, spare: Iterable[str] = ()
) -> list[str]:
    """Running rows (any worker, `cli:` included) without a heartbeat for too long.

    `spare` names rows this process is running right now: they are alive by
    definition, whatever their last heartbeat write says.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_sec)
    last_sign = func.coalesce(RunRow.heartbeat_at, RunRow.start_time, RunRow.queued_at)
    with db.reader() as session:
        rows = session.execute(
            select(RunRow.id, RunRow.worker_id).where(
                RunRow.status == "running", last_sign < cutoff
            )
        ).all()
    spared = set(spare)
    why = f"Interrupted: no heartbeat for {stale_after_sec:g} s"
    return [
        row.id
        for row in rows
        if row.id not in spared
        and interrupt_job(db, events, row.id, previous_worker=row.worker_id, why=why)
    ]


# Abandoned sandboxes -----------------------------------------------------------


def _sandboxes_with_active_jobs(db: Database) -> set[str]:
    """Sandbox ids named by a queued or running sandbox job (target or a param)."""
    with db.reader() as session:
        jobs = session.execute(
            select(RunRow.target_id, RunRow.params_json).where(
                RunRow.type.in_(SANDBOX_JOB_TYPES), RunRow.status.in_(ACTIVE_STATUSES)
            )
        ).all()
    named: set[str] = set()
    for job in jobs:
        named.add(job.target_id)
        params = load_json(job.params_json, {})
        named.update(value for value in params.values() if isinstance(value, str))
    return named


def fail_abandoned_sandboxes(
    db: Database, events: EventLog, older_than_sec: float
) -> list[str]:
    """Sandboxes left `creating`/`stopping` with no job working on them → `failed`.

    Their ports are released (SBX-3). `older_than_sec` leaves alone a sandbox whose
    job row is being written right now.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_sec)
    busy = _sandboxes_with_active_jobs(db)
    with db.reader() as session:
        rows = session.execute(
            select(Sandbox.id, Sandbox.status).where(
                Sandbox.status.in_(tuple(ABANDONED_SANDBOX_STATUSES)),
                Sandbox.updated_at < cutoff,
            )
        ).all()
    failed = []
    for row in rows:
        if row.id in busy:
            continue
        error = f"Interrupted while {row.status}: the job working on it stopped"
        with db.transaction() as session:
            result = session.execute(
                update(Sandbox)
                .where(Sandbox.id == row.id, Sandbox.status == row.status)
                .values(
                    status="failed",
                    last_error=error,
                    updated_at=utcnow(),
                    **{column: None for column in PORT_COLUMNS.values()},
                )
                .execution_options(synchronize_session=False)
            )
        if changed_rows(result) == 1:
            events.emit(
                ABANDONED_SANDBOX_STATUSES[row.status],
                {"sandbox_id": row.id, "error": error},
            )
            failed.append(row.id)
    return failed


# Event retention -----------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    events_by_age: int
    events_by_count: int
    payloads_dropped: int
    outbox_deleted: int

    @property
    def events_deleted(self) -> int:
        return self.events_by_age + self.events_by_count


def _delete_events(db: Database, condition: ColumnElement[bool]) -> int:
    """Delete matching events oldest first, `PRUNE_BATCH` rows per transaction."""
    deleted = 0
    while True:
        batch = select(Event.id).where(condition).order_by(Event.id).limit(PRUNE_BATCH)
        with db.transaction() as session:
            result = session.execute(
                delete(Event)
                .where(Event.id.in_(batch))
                .execution_options(synchronize_session=False)
            )
        count = changed_rows(result)
        deleted += count
        if count < PRUNE_BATCH:
            return deleted


def _first_kept_id(db: Database, max_rows: int) -> int | None:
    """Id of the `max_rows`-th newest event: older ones are beyond the cap."""
    with db.reader() as session:
        return session.scalar(
            select(Event.id).order_by(Event.id.desc()).offset(max_rows - 1).limit(1)
        )


def prune_events(
    settings: Settings,
    runtime_db: Database,
    webhook_db: Database,
    events: EventLog,
    *,
    max_age_days: float | None = None,
    max_rows: int | None = None,
) -> PruneResult:
    """EVT-5: events past their age, then the oldest beyond the row cap; then old
    webhook payloads (the rows stay) and old `done` outbox rows. Emits
    `events_pruned` when events were deleted.
    """
    now = utcnow()
    age_days = settings.event_retention_days if max_age_days is None else max_age_days
    row_cap = settings.event_max_rows if max_rows is None else max_rows
    by_age = _delete_events(
        runtime_db, Event.timestamp < now - timedelta(days=age_days)
    )
    first_kept = _first_kept_id(runtime_db, row_cap)
    by_count = (
        0 if first_kept is None else _delete_events(runtime_db, Event.id < first_kept)
    )

    payload_cutoff = now - timedelta(days=settings.payload_retention_days)
    with webhook_db.transaction() as session:
        payloads = session.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.created_at < payload_cutoff,
                WebhookEvent.payload.is_not(None),
            )
            .values(payload=None)
            .execution_options(synchronize_session=False)
        )
        outbox = session.execute(
            delete(GiteaOutbox)
            .where(
                GiteaOutbox.status == "done", GiteaOutbox.updated_at < payload_cutoff
            )
            .execution_options(synchronize_session=False)
        )

    result = PruneResult(by_age, by_count, changed_rows(payloads), changed_rows(outbox))
    if result.events_deleted:
        events.emit("events_pruned", {"deleted": result.events_deleted})
    log.info(
        "pruned %d events (%d by age, %d over the cap), %d payloads, %d outbox rows",
        result.events_deleted,
        by_age,
        by_count,
        result.payloads_dropped,
        result.outbox_deleted,
    )
    return result


# The thread ---------------------------------------------------------------------------


@dataclass
class _Task:
    name: str
    every_sec: float
    action: Callable[[], Any]
    due_at: float = 0.0  # monotonic; 0 = at the first pass


class Housekeeper:
    """One thread running the periodic tasks; the first pass runs at start."""

    def __init__(
        self, services: Services, *, running_jobs: Callable[[], Iterable[str]]
    ) -> None:
        settings = services.settings
        self.services = services
        self.running_jobs = running_jobs
        self.tasks = [
            _Task("stale runs", settings.housekeeper_sec, self.interrupt_stale_runs),
            _Task(
                "abandoned sandboxes",
                settings.housekeeper_sec,
                self.fail_abandoned_sandboxes,
            ),
            _Task(
                "sandbox health", settings.sandbox_health_sec, self.check_sandbox_health
            ),
            _Task("event pruning", settings.prune_interval_sec, self.prune_events),
        ]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="orket-housekeeper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def interrupt_stale_runs(self) -> list[str]:
        services = self.services
        return interrupt_stale_runs(
            services.runtime_db,
            services.events,
            services.settings.stale_run_sec,
            spare=self.running_jobs(),
        )

    def fail_abandoned_sandboxes(self) -> list[str]:
        services = self.services
        return fail_abandoned_sandboxes(
            services.runtime_db, services.events, services.settings.stale_run_sec
        )

    def check_sandbox_health(self) -> dict[str, str]:
        return check_sandbox_health(self.services)

    def prune_events(self) -> PruneResult:
        services = self.services
        return prune_events(
            services.settings, services.runtime_db, services.webhook_db, services.events
        )

    def run_due(self, now: float) -> None:
        """Run every task whose time has come."""
        for task in self.tasks:
            if self._stop.is_set() or now < task.due_at:
                continue
            task.due_at = now + task.every_sec
            try:
                task.action()
            except Exception:  # noqa: BLE001 - one failing task must not stop others
                log.exception("housekeeping task %r failed", task.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self.run_due(now)
            next_due = min(task.due_at for task in self.tasks)
            self._stop.wait(max(0.05, next_due - time.monotonic()))
