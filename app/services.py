"""What a process holds: settings, both databases, the event log, background workers.

Blueprints reach it through `current_services()`; the engine and workers get the
pieces they need passed in explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from flask import current_app

from app.config import Settings
from app.db import Database
from app.events import EventLog


def package_version() -> str:
    try:
        return metadata.version("orket-runtime")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass
class Services:
    settings: Settings
    runtime_db: Database
    webhook_db: Database
    events: EventLog
    process: str
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    extras: dict[str, object] = field(default_factory=dict)
    _shutdown_started: bool = False

    def on_stop(self, stopper: Callable[[], None]) -> None:
        """Register a blocking stop step (join a thread) run by `stop()`."""
        self.stoppers.append(stopper)

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Register a quick step (stop claiming, close sockets) run first on SIGTERM."""
        self.shutdown_hooks.append(hook)

    def begin_shutdown(self) -> None:
        if self._shutdown_started:
            return
        self._shutdown_started = True
        for hook in list(self.shutdown_hooks):
            hook()

    def stop(self) -> None:
        """Stop background workers in reverse start order, then close the databases."""
        self.begin_shutdown()
        while self.stoppers:
            self.stoppers.pop()()
        self.runtime_db.dispose()
        self.webhook_db.dispose()


def build_services(settings: Settings, process: str) -> Services:
    runtime_db = Database(settings.runtime_db_url, "runtime")
    webhook_db = Database(settings.webhook_db_url, "webhook")
    events = EventLog(settings, runtime_db)
    return Services(settings, runtime_db, webhook_db, events, process)


def current_services() -> Services:
    return current_app.extensions["orket"]
