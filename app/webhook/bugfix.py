"""Bug-fix phases (WH-12): the time a merged PR's sandbox stays up for testing.

A phase starts with the merge (inside the policy transaction), lasts
`ORKET_BUGFIX_DAYS`, can be extended by a week at a time up to
`ORKET_BUGFIX_MAX_DAYS` from its start, and is completed by the outbox worker's
hourly check, which also owes the runtime a `sandbox_stop` job for the PR sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.events import EventLog
from app.models.base import dump_json, isoformat, load_json, utcnow
from app.models.webhook import BugFixPhase, GiteaOutbox
from app.webhook.outbox import ROLE, add_rows, runtime_row

EXTENSION_DAYS = 7
OPEN_STATUSES = ("active", "extended")


class PhaseError(Exception):
    """A phase cannot be changed as asked; the message says why."""


@dataclass(frozen=True)
class PhaseStarted:
    rock_id: str
    ends_at: str


def start_phase(
    session: Session,
    settings: Settings,
    *,
    rock_id: str,
    pr_key: str,
    sandbox_id: str,
    now: datetime | None = None,
) -> PhaseStarted | None:
    """Insert an `active` phase in the caller's transaction; None when the rock
    already has one (a phase is started once per PR)."""
    now = now or utcnow()
    ends_at = str(isoformat(now + timedelta(days=settings.bugfix_days)))
    data: dict[str, Any] = {
        "rock_id": rock_id,
        "pr_key": pr_key,
        "sandbox_id": sandbox_id,
        "started_at": isoformat(now),
        "scheduled_end": ends_at,
        "max_duration_days": settings.bugfix_max_days,
        "extensions": [],
    }
    table = BugFixPhase.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(
        dialect.insert(table)
        .values(
            rock_id=rock_id, data_json=dump_json(data), status="active", updated_at=now
        )
        .on_conflict_do_nothing()
        .returning(table.c.rock_id)
    ).first()
    return PhaseStarted(rock_id, ends_at) if inserted else None


def extend_phase(
    webhook_db: Database, rock_id: str, reason: str, now: datetime | None = None
) -> dict[str, Any]:
    """Add up to a week to an open phase, never past its maximum; returns its data."""
    now = now or utcnow()
    with webhook_db.transaction() as session:
        phase = session.get(BugFixPhase, rock_id, with_for_update=True)
        if phase is None:
            raise PhaseError(f"No bug-fix phase for {rock_id}")
        if phase.status not in OPEN_STATUSES:
            raise PhaseError(f"Bug-fix phase {rock_id} is {phase.status}")

        data = load_json(phase.data_json, {})
        started = datetime.fromisoformat(data["started_at"])
        ends = datetime.fromisoformat(data["scheduled_end"])
        limit = started + timedelta(days=float(data["max_duration_days"]))
        new_end = min(ends + timedelta(days=EXTENSION_DAYS), limit)
        if new_end <= ends:
            raise PhaseError(
                f"Bug-fix phase {rock_id} already lasts its maximum of "
                f"{data['max_duration_days']:g} days"
            )
        data["scheduled_end"] = isoformat(new_end)
        data["extensions"] = [
            *data.get("extensions", []),
            {
                "at": isoformat(now),
                "reason": reason,
                "days": (new_end - ends).total_seconds() / 86400,
            },
        ]
        phase.data_json = dump_json(data)
        phase.status = "extended"
        phase.updated_at = now
        return data


def complete_expired_phases(
    webhook_db: Database, events: EventLog, now: datetime | None = None
) -> list[str]:
    """Complete every open phase past its end and owe a `sandbox_stop` for its
    sandbox; returns the rock ids completed."""
    now = now or utcnow()
    completed: list[tuple[str, str]] = []
    with webhook_db.transaction() as session:
        query = (
            select(BugFixPhase)
            .where(BugFixPhase.status.in_(OPEN_STATUSES))
            .with_for_update()
        )
        for phase in session.scalars(query):
            data = load_json(phase.data_json, {})
            ends_at = data.get("scheduled_end")
            if not ends_at or datetime.fromisoformat(ends_at) > now:
                continue
            data["completed_at"] = isoformat(now)
            phase.data_json = dump_json(data)
            phase.status = "completed"
            phase.updated_at = now
            if data.get("sandbox_id"):
                add_rows(
                    session, [_sandbox_stop_row(phase.rock_id, data["sandbox_id"])]
                )
            completed.append((phase.rock_id, ends_at))

    for rock_id, ends_at in completed:
        events.emit(
            "bug_fix_phase_completed",
            {"rock_id": rock_id, "ends_at": ends_at},
            role=ROLE,
        )
    return [rock_id for rock_id, _ in completed]


def _sandbox_stop_row(rock_id: str, sandbox_id: str) -> GiteaOutbox:
    return runtime_row(
        "runtime_sandbox_job",
        f"sandbox:{sandbox_id}",
        {
            "kind": "sandbox_stop",
            "sandbox_id": sandbox_id,
            "params": {"rock_id": rock_id},
        },
        f"sandbox:{sandbox_id}:stop",
        None,
    )
