"""Sandbox jobs: `sessions` rows of type `sandbox_deploy` / `sandbox_stop` (JOB-1).

Producers (the webhook's outbox, the stop route, the bug-fix phase) call
`enqueue_sandbox_job`; the API process's job runner claims the row and calls
`execute_sandbox_job`, which sets the row's terminal status. The queue holds at
most one active job per sandbox id.

`params_json` of a deploy job: `tech_stack` (default `ORKET_SANDBOX_TECH_STACK`),
`clone_url`, `commit_sha` (or `merge_sha`), `repo_full_name`, `pr_number`,
`rock_id`, optionally `project_name`. A stop job needs none.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.db import Database
from app.events import EventLog
from app.models.base import dump_json, load_json, utcnow
from app.models.runtime import SANDBOX_JOB_TYPES
from app.models.runtime import Session as RunRow
from app.sandbox.deploy import Deployment, DeployRequest, stop_sandbox
from app.sandbox.identity import is_valid_sandbox_id

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

ACTIVE_JOB_STATUSES = ("queued", "running")
TERMINAL_JOB_STATUSES = ("done", "failed", "halted", "interrupted")
# pg_advisory_xact_lock key of sandbox-job enqueues ("orketSJ").
JOBS_LOCK_KEY = 0x6F726B6574534A


class SandboxJobConflict(Exception):
    """The sandbox already has a queued or running job."""

    def __init__(self, sandbox_id: str, job_id: str) -> None:
        self.sandbox_id = sandbox_id
        self.job_id = job_id
        self.detail = f"Sandbox {sandbox_id} already has an active job {job_id}"
        super().__init__(self.detail)


@dataclass(frozen=True)
class SandboxJob:
    session_id: str
    kind: str
    sandbox_id: str
    params: dict[str, Any]


def enqueue_sandbox_job(
    runtime_db: Database,
    events: EventLog,
    *,
    kind: str,
    sandbox_id: str,
    params: dict[str, Any],
    source: str,
) -> dict[str, Any]:
    """Queue a sandbox job; raises `SandboxJobConflict` while another is active."""
    if kind not in SANDBOX_JOB_TYPES:
        raise ValueError(f"not a sandbox job type: {kind}")
    if not is_valid_sandbox_id(sandbox_id):
        raise ValueError(f"not a sandbox id: {sandbox_id!r}")
    with runtime_db.transaction() as session:
        if runtime_db.is_postgresql:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOBS_LOCK_KEY}
            )
        active = _active_job(session, sandbox_id)
        if active is not None:
            raise SandboxJobConflict(sandbox_id, active)
        job_id = _new_run_id(session)
        session.add(
            RunRow(
                id=job_id,
                type=kind,
                name=f"{kind} {sandbox_id}",
                status="queued",
                target_id=sandbox_id,
                builds_json="[]",
                params_json=dump_json(params),
                source=source,
                queued_at=utcnow(),
            )
        )
    events.emit(
        "run_queued",
        {
            "run_id": job_id,
            "type": kind,
            "target": sandbox_id,
            "build_id": None,
            "builds": [],
            "source": source,
        },
        role="webhook" if source == "webhook" else "system",
        run_id=job_id,
    )
    return {"session_id": job_id, "status": "queued", "sandbox_id": sandbox_id}


def _active_job(session: Session, sandbox_id: str) -> str | None:
    return session.scalar(
        select(RunRow.id)
        .where(
            RunRow.type.in_(SANDBOX_JOB_TYPES),
            RunRow.target_id == sandbox_id,
            RunRow.status.in_(ACTIVE_JOB_STATUSES),
        )
        .limit(1)
    )


def _new_run_id(session: Session) -> str:
    while True:
        candidate = uuid.uuid4().hex[:8]
        if session.get(RunRow, candidate) is None:
            return candidate


def execute_sandbox_job(services: Services, session_id: str) -> str:
    """Run the sandbox job `session_id` to its end; returns its terminal status.

    The job runner claims the row first; a row still `queued` (a direct call) is
    claimed here. A row that already ended is left alone.
    """
    job = _claim(services.runtime_db, session_id)
    if isinstance(job, str):
        return job
    log.info("sandbox job %s: %s %s", job.session_id, job.kind, job.sandbox_id)
    if job.kind == "sandbox_deploy":
        request = DeployRequest.from_params(job.params, services.settings)
        error = Deployment(
            services, job.sandbox_id, request, run_id=job.session_id
        ).run()
    else:
        error = stop_sandbox(services, job.sandbox_id, run_id=job.session_id)
    status = "failed" if error else "done"
    _finish(services.runtime_db, job.session_id, status, error)
    return status


def _claim(runtime_db: Database, session_id: str) -> SandboxJob | str:
    """The job to run, or the status of a row that has already ended."""
    with runtime_db.transaction() as session:
        row = session.get(RunRow, session_id)
        if row is None:
            raise LookupError(f"no run {session_id}")
        if row.type not in SANDBOX_JOB_TYPES:
            raise ValueError(f"run {session_id} is not a sandbox job")
        if row.status in TERMINAL_JOB_STATUSES:
            return row.status
        if row.status == "queued":
            now = utcnow()
            row.status = "running"
            row.start_time = now
            row.heartbeat_at = now
        job = SandboxJob(
            row.id, row.type, row.target_id, load_json(row.params_json, {})
        )
    if not is_valid_sandbox_id(job.sandbox_id):
        _finish(runtime_db, session_id, "failed", "Invalid sandbox id")
        return "failed"
    return job


def _finish(
    runtime_db: Database, session_id: str, status: str, error: str | None
) -> None:
    with runtime_db.transaction() as session:
        session.execute(
            update(RunRow)
            .where(RunRow.id == session_id, RunRow.status == "running")
            .values(status=status, end_time=utcnow(), error=error)
        )
