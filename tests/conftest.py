"""Shared fixtures: settings, migrated databases (SQLite or PostgreSQL), apps, servers.

The whole suite runs on SQLite by default and on PostgreSQL when
ORKET_TEST_DATABASE_URL names a server database (for example
postgresql+psycopg://postgres@127.0.0.1:5432/postgres); two scratch databases are
created next to it for the session and emptied before every test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.db import Database
from app.migrate import upgrade
from app.models.runtime import RuntimeBase
from app.models.webhook import WebhookBase

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Copies of ../shared/fixtures/gitea and ../shared/orket-model, kept byte for byte:
# the deliveries are signed over their exact bytes.
GITEA_FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "gitea"
ORKET_MODEL_TREE = PROJECT_ROOT / "tests" / "fixtures" / "orket-model"
API_KEY = "test-api-key-0123456789"
WEBHOOK_SECRET = "fixture-secret"
PG_URL = os.environ.get("ORKET_TEST_DATABASE_URL", "").strip()
BACKEND = "postgresql" if PG_URL else "sqlite"
ENV_PREFIXES = ("ORKET_", "GITEA_", "OLLAMA_")


def pytest_report_header(config: Any) -> str:
    return f"orket database backend: {BACKEND}"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's ORKET_*/GITEA_* variables or a stray `.env`."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# Databases -----------------------------------------------------------------


class _PgScratch:
    """Two scratch PostgreSQL databases for the session, emptied per test."""

    def __init__(self, base_url: str) -> None:
        self.base = make_url(base_url)
        suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.names = {
            "runtime": f"orket_test_rt_{suffix}",
            "webhook": f"orket_test_wh_{suffix}",
        }
        admin = create_engine(
            self.base, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            for name in self.names.values():
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.urls = {
            env: self.base.set(database=name).render_as_string(hide_password=False)
            for env, name in self.names.items()
        }
        for env, url in self.urls.items():
            upgrade(env, url)

    def empty(self) -> None:
        for env, metadata in (
            ("runtime", RuntimeBase.metadata),
            ("webhook", WebhookBase.metadata),
        ):
            engine = create_engine(self.urls[env], poolclass=NullPool)
            tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            engine.dispose()

    def drop(self) -> None:
        admin = create_engine(
            self.base, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            for name in self.names.values():
                connection.execute(
                    text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
        admin.dispose()


@pytest.fixture(scope="session")
def _sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    paths = {"runtime": folder / "runtime.db", "webhook": folder / "webhook.db"}
    for env, path in paths.items():
        upgrade(env, f"sqlite:///{path}")
    return paths


@pytest.fixture(scope="session")
def _pg_scratch() -> Iterator[_PgScratch | None]:
    if not PG_URL:
        yield None
        return
    scratch = _PgScratch(PG_URL)
    yield scratch
    scratch.drop()


@pytest.fixture
def database_urls(
    tmp_path: Path, _sqlite_templates: dict[str, Path], _pg_scratch: _PgScratch | None
) -> dict[str, str]:
    """URLs of two migrated, empty databases for this test."""
    if _pg_scratch is not None:
        _pg_scratch.empty()
        return dict(_pg_scratch.urls)
    urls = {}
    for env, template in _sqlite_templates.items():
        target = tmp_path / "dbs" / template.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(template, target)
        urls[env] = f"sqlite:///{target}"
    return urls


@pytest.fixture
def settings_factory(
    tmp_path: Path, database_urls: dict[str, str]
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "config_dir": tmp_path / "config",
            "model_dir": tmp_path / "model",
            "runtime_db_url_raw": database_urls["runtime"],
            "webhook_db_url_raw": database_urls["webhook"],
            "api_key": API_KEY,
            "webhook_secret": WEBHOOK_SECRET,
            "model_retry_base_sec": 0.0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def runtime_db(settings: Settings) -> Iterator[Database]:
    db = Database(settings.runtime_db_url, "runtime")
    yield db
    db.dispose()


@pytest.fixture
def webhook_db(settings: Settings) -> Iterator[Database]:
    db = Database(settings.webhook_db_url, "webhook")
    yield db
    db.dispose()


# Apps ------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    from app import create_app

    flask_app = create_app(settings)
    yield flask_app
    flask_app.extensions["orket"].stop()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"X-API-Key": API_KEY}


@pytest.fixture
def webhook_app(settings: Settings) -> Iterator[Any]:
    from app import create_webhook_app

    flask_app = create_webhook_app(settings)
    yield flask_app
    flask_app.extensions["orket"].stop()


@pytest.fixture
def webhook_client(webhook_app: Any) -> Any:
    return webhook_app.test_client()


@pytest.fixture
def make_webhook_app(settings_factory: Callable[..., Settings]) -> Iterator[Any]:
    """Build webhook apps with settings overrides (bot login `orket-bot` by default,
    as in the Gitea fixtures); all stopped at the end."""
    from app import create_webhook_app

    apps: list[Any] = []

    def build(**overrides: Any) -> Any:
        values = {"gitea_bot_login_raw": "orket-bot", **overrides}
        flask_app = create_webhook_app(settings_factory(**values))
        apps.append(flask_app)
        return flask_app

    yield build
    for flask_app in apps:
        flask_app.extensions["orket"].stop()


# Real servers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        alias = info.validation_alias.choices[0]  # type: ignore[union-attr]
        env[str(alias)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class LiveServer:
    """A gunicorn process of one of our entrypoints on a free loopback port."""

    def __init__(self, process: str, settings: Settings, log_path: Path) -> None:
        self.process = process
        self.settings = settings
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, expect_ready: bool = True) -> LiveServer:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(ENV_PREFIXES)
        }
        env.update(settings_environment(self.settings))
        port_var = "ORKET_PORT" if self.process == "api" else "ORKET_WEBHOOK_PORT"
        env[port_var] = str(self.port)
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        module = "gunicorn_api" if self.process == "api" else "gunicorn_webhook"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", f"python:app.serving.{module}"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if expect_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready:\n{self.log_path.read_text()}")

    def stop(self, sig: int = 15, timeout: float = 40.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the master and its worker, as a crash would."""
        if self.proc is None:
            return
        subprocess.run(["pkill", "-9", "-P", str(self.proc.pid)], check=False)
        self.proc.kill()
        self.proc.wait()
        self._log.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real servers: `live_server("api", settings)`; all stopped at the end."""
    servers: list[LiveServer] = []

    def start(process: str, settings: Settings, **kwargs: Any) -> LiveServer:
        server = LiveServer(
            process, settings, tmp_path / f"{process}-{len(servers)}.log"
        )
        servers.append(server)
        return server.start(**kwargs)

    yield start
    for server in servers:
        server.stop(timeout=10)
