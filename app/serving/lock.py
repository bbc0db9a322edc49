"""One API process per runtime database (PROC-3): an advisory lock.

SQLite: an exclusive `flock` on `<data>/run/api.lock`. PostgreSQL: a session-level
`pg_try_advisory_lock` held on a dedicated connection for the life of the process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from app.config import Settings

PG_LOCK_KEY = 0x0_52_4B_45_54  # "RKET": stable across releases


class LockHeld(Exception):
    pass


class ApiProcessLock:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fd: int | None = None
        self._engine: Engine | None = None
        self._connection: Connection | None = None

    def acquire(self) -> None:
        url = self.settings.runtime_db_url
        if url.startswith("sqlite"):
            self._acquire_file(self.settings.run_dir / "api.lock")
        else:
            self._acquire_pg(url)

    def _acquire_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(
                "Another API process is serving this runtime database; stop it first"
            ) from None
        self._fd = fd

    def _acquire_pg(self, url: str) -> None:
        self._engine = create_engine(url, poolclass=NullPool)
        connection = self._connection = self._engine.connect()
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PG_LOCK_KEY}
        ).scalar()
        connection.commit()
        if not got:
            self.release()
            raise LockHeld(
                "Another API process is serving this runtime database; stop it first"
            )

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
