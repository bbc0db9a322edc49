"""The job runner of the API process (JOB-1..JOB-5, PROC-4).

`sessions` rows are the queue. A dispatcher thread claims the oldest queued row of
a type group with one conditional UPDATE, only while that group's pool has a free
thread, and runs it on its own thread: runs (`epic`, `rock`, `issue`) through the
engine, sandbox jobs through `app.sandbox`. While a job runs, a `Heartbeat` keeps
its `heartbeat_at` fresh so the housekeeper can tell a live job from a dead one.
Nothing lives only in memory: a restart finds the rows where they were.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import Database, changed_rows
from app.engine.runner import Engine
from app.events import EventLog
from app.metrics import RUNS
from app.models.base import utcnow
from app.models.runtime import RUN_TYPES, SANDBOX_JOB_TYPES
from app.models.runtime import Session as RunRow
from app.runs import run_counts
from app.sandbox import execute_sandbox_job
from app.services import Services

log = logging.getLogger(__name__)

# A lost race for one row (PostgreSQL: another dispatcher committed first) is
# retried on the next oldest row this many times before waiting for the next poll.
CLAIM_ATTEMPTS = 3
ERROR_TEXT_LIMIT = 200
# Local events after which the dispatcher looks for work at once.
WAKE_EVENTS = ("run_queued",)
TERMINAL_STATUSES = ("done", "failed", "halted", "interrupted")


def worker_id(kind: str) -> str:
    """`api:<host>:<pid>` or `cli:<host>:<pid>`: who holds a running row."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    type: str


@dataclass(frozen=True)
class JobGroup:
    """Job types that share one bounded pool."""

    name: str
    types: tuple[str, ...]
    size: int


def claim_next_job(
    db: Database, types: Iterable[str], worker: str
) -> ClaimedJob | None:
    """Claim the oldest queued row of `types` for `worker` (JOB-2).

    The claim is one conditional UPDATE (`... WHERE id = :id AND status = 'queued'`):
    a row count of 1 means this worker owns the row, so two dispatchers can never
    both claim it.
    """
    types = tuple(types)
    for _ in range(CLAIM_ATTEMPTS):
        with db.transaction() as session:
            candidate = session.execute(
                select(RunRow.id, RunRow.type)
                .where(RunRow.status == "queued", RunRow.type.in_(types))
                .order_by(RunRow.queued_at, RunRow.id)
                .limit(1)
            ).first()
            if candidate is None:
                return None
            now = utcnow()
            claimed = session.execute(
                update(RunRow)
                .where(RunRow.id == candidate.id, RunRow.status == "queued")
                .values(
                    status="running", start_time=now, heartbeat_at=now, worker_id=worker
                )
                .execution_options(synchronize_session=False)
            )
            if changed_rows(claimed) == 1:
                return ClaimedJob(candidate.id, candidate.type)
    return None


class Heartbeat:
    """Refreshes `heartbeat_at` of one running row every `interval_sec` seconds.

    Used as a context manager around a job by the dispatcher and by the CLI, which
    runs epics in-process; it runs on its own thread, so a long model call or
    subprocess in the job never makes the row look dead.
    """

    def __init__(self, db: Database, run_id: str, interval_sec: float) -> None:
        self.db = db
        self.run_id = run_id
        self.interval_sec = interval_sec
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"orket-heartbeat-{run_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> bool:
        """One refresh; False once the row is no longer `running`."""
        with self.db.transaction() as session:
            result = session.execute(
                update(RunRow)
                .where(RunRow.id == self.run_id, RunRow.status == "running")
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        return changed_rows(result) == 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_sec):
            try:
                if not self.beat():
                    return
            except SQLAlchemyError as exc:
                log.warning(
                    "heartbeat of run %s failed: %s", self.run_id, type(exc).__name__
                )


def run_finished_data(session: Session, run: RunRow) -> dict[str, Any]:
    """The `run_finished` payload of an ended job the engine did not end."""
    return {
        "run_id": run.id,
        "status": run.status,
        **run_counts(session, run),
        "duration_ms": _duration_ms(run.start_time, run.end_time),
    }


def _duration_ms(start: datetime | None, end: datetime | None) -> int:
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


def end_running_job(
    db: Database,
    events: EventLog,
    run_id: str,
    status: str,
    *,
    error: str,
    event_data: dict[str, Any],
) -> bool:
    """Move a `running` row to a terminal `status` unless something else ended it.

    Emits `run_interrupted` or `run_failed` (with `event_data`), then
    `run_finished`. Returns False when the row was no longer running.
    """
    with db.transaction() as session:
        ended = session.execute(
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.status == "running")
            .values(status=status, end_time=utcnow(), error=error)
            .execution_options(synchronize_session=False)
        )
    if changed_rows(ended) != 1:
        return False
    log.info("job %s ended %s: %s", run_id, status, error)
    event = "run_interrupted" if status == "interrupted" else "run_failed"
    events.emit(event, {"run_id": run_id, **event_data}, run_id=run_id)
    announce_finished(db, events, run_id)
    return True


def announce_finished(db: Database, events: EventLog, run_id: str) -> None:
    """`run_finished` for a job the engine did not end (always its last event)."""
    with db.reader() as session:
        run = session.get(RunRow, run_id)
        if run is None or run.status not in TERMINAL_STATUSES:
            return
        finished = run_finished_data(session, run)
    if run.type in RUN_TYPES:
        RUNS.labels(status=run.status).inc()
    events.emit("run_finished", finished, run_id=run_id)


def interrupt_job(
    db: Database,
    events: EventLog,
    run_id: str,
    *,
    previous_worker: str | None,
    why: str,
) -> bool:
    """Mark a running row `interrupted` (`run_interrupted`, then `run_finished`)."""
    return end_running_job(
        db,
        events,
        run_id,
        "interrupted",
        error=why,
        event_data={"previous_worker": previous_worker},
    )


def sweep_interrupted(
    db: Database, events: EventLog, *, worker_prefix: str = "api:"
) -> list[str]:
    """JOB-5 at API start: rows left `running` by a dead API process → `interrupted`.

    Only rows whose `worker_id` starts with `worker_prefix`: a CLI run may still be
    alive, and the housekeeper judges those by their heartbeat. Call it before the
    dispatcher starts, since this process's own id may equal a dead one's.
    """
    with db.reader() as session:
        rows = session.execute(
            select(RunRow.id, RunRow.worker_id).where(
                RunRow.status == "running", RunRow.worker_id.startswith(worker_prefix)
            )
        ).all()
    return [
        row.id
        for row in rows
        if interrupt_job(
            db,
            events,
            row.id,
            previous_worker=row.worker_id,
            why="Interrupted: the API process running it stopped",
        )
    ]


def short_error(exc: BaseException, hide: str | None = None) -> str:
    """`<Type>: <first line>`, cut short, with the data directory path hidden."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if hide:
        text = text.replace(hide, "<data>")
    return text[:ERROR_TEXT_LIMIT]


JobExecutor = Callable[[str], Any]


class JobRunner:
    """Dispatcher thread plus one bounded pool per job group (JOB-2).

    `run_executor(run_id)` runs an epic/rock/issue row (default: the engine) and
    `sandbox_executor(session_id)` a sandbox job (default: `app.sandbox`); tests
    may inject stand-ins.
    """

    def __init__(
        self,
        services: Services,
        *,
        run_executor: JobExecutor | None = None,
        sandbox_executor: JobExecutor | None = None,
        worker: str | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.db = services.runtime_db
        self.events = services.events
        self.worker_id = worker or worker_id("api")
        self.poll_sec = settings.dispatch_poll_ms / 1000
        self.heartbeat_sec = settings.heartbeat_sec
        self.shutdown_wait_sec = settings.shutdown_wait_sec
        self.groups = (
            JobGroup("runs", RUN_TYPES, settings.max_runs),
            JobGroup("sandbox", SANDBOX_JOB_TYPES, settings.max_sandbox_jobs),
        )
        self._run_executor = run_executor or self._run_with_engine
        self._sandbox_executor = sandbox_executor or self._run_sandbox_job
        self._active: dict[str, dict[str, threading.Thread]] = {
            group.name: {} for group in self.groups
        }
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None

    # Lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.events.add_listener(self._on_event)
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="orket-dispatcher", daemon=True
        )
        self._dispatcher.start()

    def wake(self) -> None:
        """Look for queued work now instead of at the next poll."""
        self._wake.set()

    def begin_shutdown(self) -> None:
        """PROC-4, the quick part: stop claiming and ask running runs to halt."""
        self._stopping.set()
        self._wake.set()
        running = self.active_job_ids()
        if not running:
            return
        try:
            with self.db.transaction() as session:
                session.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(running), RunRow.status == "running")
                    .values(halt_requested=True)
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError as exc:
            log.warning("could not request halt of runs: %s", type(exc).__name__)

    def stop(self) -> None:
        """PROC-4: wait for running jobs, then mark what is left `interrupted`."""
        self.begin_shutdown()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=5)
        deadline = time.monotonic() + self.shutdown_wait_sec
        for thread in self._threads():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for run_id in self.active_job_ids():
            interrupt_job(
                self.db,
                self.events,
                run_id,
                previous_worker=self.worker_id,
                why="Interrupted: the server shut down before the run halted",
            )

    def active_job_ids(self) -> list[str]:
        with self._lock:
            return [job_id for jobs in self._active.values() for job_id in jobs]

    def _threads(self) -> list[threading.Thread]:
        with self._lock:
            return [
                thread for jobs in self._active.values() for thread in jobs.values()
            ]

    def _on_event(self, record: dict[str, Any]) -> None:
        if record.get("event") in WAKE_EVENTS:
            self._wake.set()

    # Dispatching ----------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.dispatch_once()
            except SQLAlchemyError as exc:
                log.warning("dispatcher could not claim jobs: %s", type(exc).__name__)
            self._wake.wait(self.poll_sec)
            self._wake.clear()

    def dispatch_once(self) -> list[ClaimedJob]:
        """Claim and start jobs while each group's pool has a free thread."""
        started = []
        for group in self.groups:
            while not self._stopping.is_set() and self._free_slots(group) > 0:
                job = claim_next_job(self.db, group.types, self.worker_id)
                if job is None:
                    break
                self._start_job(group, job)
                started.append(job)
        return started

    def _free_slots(self, group: JobGroup) -> int:
        with self._lock:
            return group.size - len(self._active[group.name])

    def _start_job(self, group: JobGroup, job: ClaimedJob) -> None:
        thread = threading.Thread(
            target=self._execute,
            args=(group, job),
            name=f"orket-job-{job.id}",
            daemon=True,
        )
        with self._lock:
            self._active[group.name][job.id] = thread
        thread.start()

    # Executing ------------------------------------------------------------

    def _execute(self, group: JobGroup, job: ClaimedJob) -> None:
        try:
            with Heartbeat(self.db, job.id, self.heartbeat_sec):
                self.events.emit(
                    "run_started",
                    {"run_id": job.id, "worker": self.worker_id},
                    run_id=job.id,
                )
                if job.type in RUN_TYPES:
                    self._run_executor(job.id)  # the engine emits `run_finished`
                else:
                    self._sandbox_executor(job.id)
                    announce_finished(self.db, self.events, job.id)
        except Exception as exc:  # noqa: BLE001 - it ends this job, not the runner
            self._fail(job, exc)
        finally:
            with self._lock:
                self._active[group.name].pop(job.id, None)
            self._wake.set()

    def _fail(self, job: ClaimedJob, exc: Exception) -> None:
        text = short_error(exc, hide=str(self.services.settings.data_path))
        log.exception("job %s (%s) failed unexpectedly", job.id, job.type)
        self.events.emit_error(f"job {job.id}", exc, run_id=job.id)
        try:
            end_running_job(
                self.db,
                self.events,
                job.id,
                "failed",
                error=text,
                event_data={"reason": "error", "error": text, "stuck_cards": []},
            )
        except SQLAlchemyError as db_exc:
            log.warning(
                "could not mark job %s failed: %s", job.id, type(db_exc).__name__
            )

    def _run_with_engine(self, run_id: str) -> str:
        return Engine(self.services.settings, self.db, self.events).run(run_id)

    def _run_sandbox_job(self, session_id: str) -> str:
        return execute_sandbox_job(self.services, session_id)
