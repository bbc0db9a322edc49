"""What a run leaves behind besides cards: its transcript, snapshots and the success
ledger (ENG-14).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, update

from app.db import Database, changed_rows
from app.events import EventLog
from app.models.base import dump_json, isoformat, utcnow
from app.models.runtime import Session as RunRow
from app.models.runtime import SessionSnapshot, SuccessLedger

NOTE_CHARS = 200


@dataclass(frozen=True)
class TranscriptEntry:
    role: str
    issue_id: str
    content: str
    tool_calls: list[dict[str, Any]]
    tokens_used: int
    timestamp: str


class Transcript:
    """Every model reply of a run, in the order they arrived."""

    def __init__(self) -> None:
        self._entries: list[TranscriptEntry] = []
        self._lock = threading.Lock()

    def add(
        self,
        role: str,
        issue_id: str,
        content: str,
        tool_calls: list[dict[str, Any]],
        tokens_used: int,
    ) -> None:
        entry = TranscriptEntry(
            role, issue_id, content, tool_calls, tokens_used, isoformat(utcnow()) or ""
        )
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[TranscriptEntry]:
        with self._lock:
            return list(self._entries)

    def log_history(self) -> list[dict[str, Any]]:
        return [
            {"role": e.role, "issue": e.issue_id, "content": e.content}
            for e in self.entries()
        ]

    def steps(self, summaries: dict[str, str]) -> list[dict[str, Any]]:
        """The stored `sessions.transcript`: one step per reply."""
        return [
            {
                "step_index": index,
                "role": entry.role,
                "issue": entry.issue_id,
                "summary": summaries.get(entry.issue_id, ""),
                "note": entry.content[:NOTE_CHARS],
            }
            for index, entry in enumerate(self.entries())
        ]


def write_snapshot(
    db: Database,
    run_id: str,
    config: dict[str, Any],
    log_history: list[dict[str, Any]],
) -> None:
    """Replace the run's snapshot row."""
    values = {
        "config_json": dump_json(config),
        "log_history": dump_json(log_history),
        "captured_at": utcnow(),
    }
    with db.transaction() as session:
        updated = changed_rows(
            session.execute(
                update(SessionSnapshot)
                .where(SessionSnapshot.session_id == run_id)
                .values(**values)
            )
        )
        if not updated:
            session.execute(insert(SessionSnapshot).values(session_id=run_id, **values))


def store_transcript(db: Database, run_id: str, steps: list[dict[str, Any]]) -> None:
    with db.transaction() as session:
        session.execute(
            update(RunRow)
            .where(RunRow.id == run_id)
            .values(transcript=dump_json(steps))
        )


def record_success(
    db: Database, events: EventLog, run_id: str, success_type: str, artifact: str
) -> None:
    """One `success_ledger` row and its `success_recorded` event."""
    with db.transaction() as session:
        session.add(
            SuccessLedger(
                session_id=run_id,
                success_type=success_type,
                artifact_ref=artifact,
                timestamp=utcnow(),
            )
        )
    events.emit(
        "success_recorded",
        {"run_id": run_id, "type": success_type, "artifact_ref": artifact},
        run_id=run_id,
    )
