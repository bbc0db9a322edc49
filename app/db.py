"""Engines and sessions for the runtime and webhook databases (DB-1).

SQLite connections get WAL, a busy timeout and foreign keys, and the driver's own
transaction handling is switched off so that we emit BEGIN ourselves: plain
`BEGIN` for reads, `BEGIN IMMEDIATE` for write transactions, which avoids the
"deferred transaction upgrades to a write and fails at once" trap.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.orm import Session, scoped_session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 5000
WRITE_OPTION = "orket_write"


class DatabaseError(Exception):
    """A database cannot be opened or created; the message is one line for operators."""


class Database:
    """One database: its engine, a session factory and a request-scoped session."""

    def __init__(self, url: str, name: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.name = name
        self.engine = _create_engine(url, pool_size=pool_size)
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            bind=self._write_engine, expire_on_commit=False
        )
        self.scoped = scoped_session(self._sessions)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        """A new session for reads (and short writes that need no immediate lock)."""
        return self._sessions()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write unit of work: `BEGIN IMMEDIATE` on SQLite, committed on success."""
        session = self._write_sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self._write_engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def reader(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
        finally:
            session.close()

    def ping(self, timeout: float = 2.0) -> bool:
        """`SELECT 1` within `timeout` seconds."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(self._select_one)
            try:
                return future.result(timeout=timeout)
            except Exception:  # noqa: BLE001 - any failure means "not healthy"
                return False

    def _select_one(self) -> bool:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def dispose(self) -> None:
        self.scoped.remove()
        self.engine.dispose()


def _create_engine(url: str, *, pool_size: int) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            pool_timeout=10,
            connect_args={"connect_timeout": 5}
            if "postgres" in parsed.drivername
            else {},
        )
    database = parsed.database or ""
    if database and database != ":memory:":
        _ensure_parent(Path(database))
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=10,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"Cannot create the database directory {path.parent}: {exc.strerror}"
        ) from None


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event, not the driver, decide when a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL stays consistent after a crash and skips an fsync per
        # commit; only the last commits may be lost on a power failure.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Any) -> None:
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def changed_rows(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (its `Result` is a `CursorResult`)."""
    return cast(CursorResult[Any], result).rowcount
