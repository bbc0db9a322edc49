"""Domain events: one row in `events`, one JSON line in the log file (EVT-1, EVT-2).

`EventLog.emit()` is the only way the runtime records what happened. It never raises:
a failed insert still writes the log line (with `"id": null`) and is counted.
Listeners (the WebSocket hub's tail) are told after each successful insert.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import portalocker
from concurrent_log_handler import ConcurrentRotatingFileHandler
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import Database
from app.metrics import EVENT_WRITE_FAILURES
from app.models.base import dump_json, isoformat, utcnow
from app.models.runtime import Event

log = logging.getLogger(__name__)

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
ARG_STRING_LIMIT = 2000
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR

_handlers: dict[Path, ConcurrentRotatingFileHandler] = {}
_handlers_lock = threading.Lock()


def _file_handler(path: Path) -> ConcurrentRotatingFileHandler:
    """One rotating handler per log file per process; a lock file serialises writers."""
    with _handlers_lock:
        handler = _handlers.get(path)
        if handler is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = ConcurrentRotatingFileHandler(
                str(path),
                maxBytes=LOG_MAX_BYTES,
                backupCount=LOG_BACKUPS,
                encoding="utf-8",
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            _handlers[path] = handler
        return handler


def event_record(row: Event, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The EVT-1 shape of a stored row."""
    if data is None:
        try:
            data = json.loads(row.data or "{}")
        except ValueError:
            data = {}
    return {
        "id": row.id,
        "timestamp": isoformat(row.timestamp),
        "role": row.role,
        "event": row.event,
        "level": row.level,
        "run_id": row.run_id,
        "card_id": row.card_id,
        "data": data,
    }


def _cut_args(data: dict[str, Any]) -> dict[str, Any]:
    args = data.get("args")
    if not isinstance(args, dict):
        return data
    cut = {
        key: value[:ARG_STRING_LIMIT] if isinstance(value, str) else value
        for key, value in args.items()
    }
    return {**data, "args": cut}


class EventLog:
    """Stores events, writes the shared log file, and notifies listeners."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.handler = _file_handler(settings.log_file)
        self.min_level = LEVELS[settings.log_level]
        self._secrets = tuple(
            secret
            for secret in (
                *settings.api_keys,
                *settings.webhook_secrets,
                settings.gitea_token,
                settings.gitea_admin_password,
                settings.openai_api_key,
                settings.webhook_test_token,
            )
            if secret and len(secret) >= 4
        )
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(
        self,
        event: str,
        data: dict[str, Any] | None = None,
        *,
        role: str = "system",
        level: str = "info",
        run_id: str | None = None,
        card_id: str | None = None,
        traceback_text: str | None = None,
    ) -> int | None:
        """Record one event; returns its id, or None when the insert failed."""
        payload = self._scrub(_cut_args(dict(data or {})))
        row = Event(
            timestamp=utcnow(),
            event=event,
            role=role or "system",
            level=level if level in LEVELS else "info",
            run_id=run_id,
            card_id=card_id,
            data=dump_json(payload),
        )
        record = self._insert(row, payload)
        line = (
            record
            if traceback_text is None
            else {**record, "traceback": traceback_text}
        )
        self._write_line(line, row.level)
        if record["id"] is not None:
            for listener in self._listeners:
                listener(record)
        return record["id"]

    def emit_error(self, where: str, exc: BaseException, **kwargs: Any) -> int | None:
        """`internal_error`: short text in the event, the traceback only in the log."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return self.emit(
            "internal_error",
            {"where": where, "error": type(exc).__name__},
            level="error",
            traceback_text=self._scrub_text(text),
            **kwargs,
        )

    def _insert(self, row: Event, payload: dict[str, Any]) -> dict[str, Any]:
        # A Core INSERT ... RETURNING: events are the hottest write of a run.
        statement = (
            insert(Event)
            .values(
                timestamp=row.timestamp,
                event=row.event,
                role=row.role,
                level=row.level,
                run_id=row.run_id,
                card_id=row.card_id,
                data=row.data,
            )
            .returning(Event.id)
        )
        try:
            with self.db.write_connection() as connection:
                row.id = connection.execute(statement).scalar_one()
            return event_record(row, payload)
        except SQLAlchemyError as exc:
            EVENT_WRITE_FAILURES.inc()
            log.warning("event %s not stored: %s", row.event, type(exc).__name__)
            return {**event_record(row, payload), "id": None}

    def _write_line(self, record: dict[str, Any], level: str) -> None:
        if LEVELS[level] < self.min_level:
            return
        line = json.dumps(
            record, ensure_ascii=False, separators=(",", ":"), default=str
        )
        entry = logging.LogRecord(
            "orket.events", LEVELS[level], "", 0, line, None, None
        )
        self.handler.handle(entry)

    def _scrub(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not self._secrets:
            return payload
        text = dump_json(payload)
        scrubbed = self._scrub_text(text)
        return payload if scrubbed == text else json.loads(scrubbed)

    def _scrub_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def clear_log_file(self) -> None:
        """Truncate the shared log file under its lock (only `clear-logs` does this)."""
        lock_path = Path(self.handler.lockFilename)
        with open(lock_path, "a") as lock_file:
            portalocker.lock(lock_file, portalocker.LOCK_EX)
            try:
                with open(self.settings.log_file, "w", encoding="utf-8"):
                    pass
            finally:
                portalocker.unlock(lock_file)
