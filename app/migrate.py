"""Programmatic Alembic: upgrade both databases, and check they are at head (DB-4)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from app.db import _ensure_parent

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
ENVIRONMENTS = ("runtime", "webhook")


class MigrationError(Exception):
    """A database cannot be migrated or is not at head; the message says what to run."""


@dataclass(frozen=True)
class MigrationResult:
    environment: str
    from_revision: str | None
    to_revision: str | None


def alembic_config(environment: str, url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI), ini_section=environment)
    config.set_main_option(
        "script_location", str(PROJECT_ROOT / "migrations" / environment)
    )
    if url:
        config.attributes["url"] = url
    return config


@contextlib.contextmanager
def connectable_for(config: Config, environment: str) -> Iterator[Connection]:
    """The connection env.py migrates: a shared one, or one made from the URL."""
    shared = config.attributes.get("connection")
    if shared is not None:
        yield shared
        return
    url = config.attributes.get("url")
    if not url:
        raise MigrationError(f"No database URL given for {environment}")
    engine = _migration_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
            connection.commit()
    finally:
        engine.dispose()


def _migration_engine(url: str):  # type: ignore[no-untyped-def]
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _ensure_parent(Path(url.removeprefix("sqlite:///")))
    return create_engine(url, poolclass=NullPool)


def _missing_sqlite_file(url: str) -> bool:
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return False
    return not Path(url.removeprefix("sqlite:///")).exists()


def head_revision(environment: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(environment)).get_current_head()


def current_revision(url: str) -> str | None:
    if _missing_sqlite_file(url):
        return None  # never create a database just to look at it
    engine = _migration_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _has_unversioned_tables(url: str) -> bool:
    engine = _migration_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    return bool(tables) and "alembic_version" not in tables


def upgrade(environment: str, url: str) -> MigrationResult:
    """Bring one database to head; refuses a database with tables but no version."""
    if _has_unversioned_tables(url):
        raise MigrationError(
            f"Database {environment} has unversioned tables; refusing to migrate it "
            "(nothing was changed). Move it aside or stamp it with Alembic."
        )
    before = current_revision(url)
    command.upgrade(alembic_config(environment, url), "head")
    return MigrationResult(environment, before, current_revision(url))


def downgrade(environment: str, url: str, target: str = "base") -> None:
    command.downgrade(alembic_config(environment, url), target)


def is_behind(environment: str, url: str) -> bool:
    return current_revision(url) != head_revision(environment)


def require_head(environment: str, url: str) -> None:
    """Refuse to serve a database that is not at head (PROC-3)."""
    try:
        behind = is_behind(environment, url)
    except Exception as exc:  # noqa: BLE001 - any driver error means "unreachable"
        raise MigrationError(
            f"Database {environment} is not reachable ({type(exc).__name__}); "
            "check its URL and run: make migrate"
        ) from None
    if behind:
        raise MigrationError(
            f"Database {environment} is not at head; run: make migrate"
        )
