"""`orket smoke [--skip-docker]`: the release smoke in one command (OPS-4).

Runs the test suite, migrates fresh databases under `.smoke/`, starts both servers
under gunicorn on free loopback ports with a generated key and secret, sends signed
Gitea-shaped deliveries, runs the demo epic over the API while watching
`/ws/events`, builds and probes the Docker image when an engine is there, and stops
the servers whatever happened. One `[release-smoke] RUN: <step>` line per step; the
first failure ends the run with exit 1 and says why.

Child processes run inside `.smoke/` with every ORKET_/GITEA_ variable replaced, so
neither the operator's environment nor their `.env` leaks into the check.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.cli import orket
from app.cli.gitea_samples import pull_request_payload, signed_delivery
from app.config import sqlite_url
from app.migrate import PROJECT_ROOT, head_revision

PREFIX = "[release-smoke]"
ENV_PREFIXES = ("ORKET_", "GITEA_", "OLLAMA_")
DEMO_EPIC_PATH = "model/core/epics/demo.json"
IMAGE_TAG = "orket:release-smoke"
HEALTH_TIMEOUT_SEC = 30.0
RUN_TIMEOUT_SEC = 60.0
DOCKER_HEALTH_TIMEOUT_SEC = 60.0
STOP_TIMEOUT_SEC = 40.0
TESTS_TIMEOUT_SEC = 3600.0
BUILD_TIMEOUT_SEC = 1800.0


class SmokeFailure(Exception):
    """A smoke step failed; the message is the reason printed to the operator."""


def say(message: str) -> None:
    click.echo(f"{PREFIX} {message}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(text_: str, lines: int = 25) -> str:
    return "\n".join(text_.strip().splitlines()[-lines:])


def wait_for_health(url: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll `url` until it answers 200; False on timeout or when `alive()` fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


class Server:
    """One gunicorn master started by the smoke, logging into `.smoke/<name>.log`."""

    def __init__(self, name: str, module: str, port: int, log_path: Path) -> None:
        self.name = name
        self.module = module
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str], cwd: Path) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", f"python:{self.module}"],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def stop(self) -> bool:
        """SIGTERM and wait; True when it stopped by itself in time."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_SEC)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return False


class ReleaseSmoke:
    def __init__(self, root: Path, skip_docker: bool) -> None:
        self.root = root
        self.skip_docker = skip_docker
        self.smoke_dir = root / ".smoke"
        self.data_dir = self.smoke_dir / "data"
        self.api_key = secrets.token_urlsafe(32)
        self.webhook_secret = secrets.token_hex(32)
        self.api = Server(
            "api", "app.serving.gunicorn_api", free_port(), self.smoke_dir / "api.log"
        )
        self.webhook = Server(
            "webhook",
            "app.serving.gunicorn_webhook",
            free_port(),
            self.smoke_dir / "webhook.log",
        )

    # Running ------------------------------------------------------------------

    def run(self) -> int:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("pytest -q", self.run_tests),
            ("fresh .smoke/ databases migrated to head", self.migrate_fresh),
            ("both servers under gunicorn, /health 200", self.start_servers),
            ("signed webhook deliveries", self.check_deliveries),
            ("demo epic over the API, watched on /ws/events", self.run_demo_epic),
            ("docker image build and /health", self.check_docker),
        ]
        failure: str | None = None
        try:
            for name, step in steps:
                say(f"RUN: {name}")
                try:
                    step()
                except SmokeFailure as exc:
                    failure = f"{name}: {exc}"
                    break
                except (
                    OSError,
                    ValueError,  # an answer that is not the JSON it should be
                    requests.RequestException,
                    subprocess.SubprocessError,
                ) as exc:
                    failure = f"{name}: {type(exc).__name__}: {exc}"
                    break
        finally:
            say("RUN: stop servers")
            stopped = self.stop_servers()
        if failure is None and not stopped:
            failure = "stop servers: a server did not stop within 40 s and was killed"
        if failure is not None:
            say(f"FAILED: {failure}")
            return 1
        say("SUCCESS")
        return 0

    def child_env(self) -> dict[str, str]:
        """The environment of every child: ours replaces all ORKET_/GITEA_ values."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
        python_path = [str(self.root), env.get("PYTHONPATH", "")]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(part for part in python_path if part),
                "ORKET_DATA_DIR": str(self.data_dir),
                "ORKET_CONFIG_DIR": str(self.smoke_dir / "config"),
                "ORKET_MODEL_DIR": str(self.smoke_dir / "model"),
                "ORKET_RUNTIME_DB_URL": self.database_url("runtime"),
                "ORKET_WEBHOOK_DB_URL": self.database_url("webhook"),
                "ORKET_API_KEY": self.api_key,
                "GITEA_WEBHOOK_SECRET": self.webhook_secret,
                "ORKET_HOST": "127.0.0.1",
                "ORKET_PORT": str(self.api.port),
                "ORKET_WEBHOOK_HOST": "127.0.0.1",
                "ORKET_WEBHOOK_PORT": str(self.webhook.port),
            }
        )
        return env

    def database_url(self, environment: str) -> str:
        name = "orket_persistence.db" if environment == "runtime" else "webhook.db"
        return sqlite_url(self.data_dir / name)

    # Steps --------------------------------------------------------------------

    def run_tests(self) -> None:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-m", "not load"],
            cwd=self.root,
            timeout=TESTS_TIMEOUT_SEC,
        )
        if code != 0:
            raise SmokeFailure(f"pytest exited {code}")

    def migrate_fresh(self) -> None:
        shutil.rmtree(self.smoke_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "orket", "migrate"],
            cwd=self.smoke_dir,
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise SmokeFailure(
                f"migrate exited {result.returncode}\n"
                + tail(result.stdout + result.stderr)
            )
        for environment in ("runtime", "webhook"):
            stored = stored_revision(self.database_url(environment))
            head = head_revision(environment)
            if stored != head:
                raise SmokeFailure(
                    f"{environment} alembic_version is {stored}, head is {head}"
                )
            say(f"  {environment}: alembic_version {stored} = head")

    def start_servers(self) -> None:
        env = self.child_env()
        for server in (self.api, self.webhook):
            server.start(env, self.smoke_dir)
        for server in (self.api, self.webhook):
            if not wait_for_health(
                server.url + "/health", HEALTH_TIMEOUT_SEC, server.alive
            ):
                state = "exited" if not server.alive() else "no /health 200 in 30 s"
                raise SmokeFailure(
                    f"{server.name} server {state}; its log ends:\n{server.log_tail()}"
                )
            say(f"  {server.name}: {server.url}/health 200")

    def check_deliveries(self) -> None:
        url = self.webhook.url + "/webhook/gitea"
        payload = pull_request_payload(
            "pr_opened",
            owner="orket-smoke",
            repo="release-smoke",
            number=1,
            title="Release smoke: open a pull request",
        )
        delivery = signed_delivery("pr_opened", payload, self.webhook_secret)

        first = requests.post(
            url, data=delivery.body, headers=delivery.headers, timeout=10
        )
        body = expect_status(first, 200, "signed delivery")
        if (
            body.get("status") == "duplicate"
            or body.get("delivery_id") != delivery.delivery_id
        ):
            raise SmokeFailure(f"signed delivery answered {body}")
        say(f"  signed pull_request opened: 200 {body.get('status')}")

        again = requests.post(
            url, data=delivery.body, headers=delivery.headers, timeout=10
        )
        body = expect_status(again, 200, "redelivery")
        if body.get("status") != "duplicate":
            raise SmokeFailure(f"redelivery answered {body}, expected duplicate")
        say("  same delivery again: 200 duplicate")

        unsigned = signed_delivery("pr_opened", payload, None)
        refused = requests.post(
            url, data=unsigned.body, headers=unsigned.headers, timeout=10
        )
        expect_status(refused, 401, "unsigned delivery")
        say("  unsigned delivery: 401")

    def run_demo_epic(self) -> None:
        try:
            import websocket  # websocket-client, a development dependency
        except ImportError:
            raise SmokeFailure(
                "websocket-client is missing; run: make install"
            ) from None

        try:
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{self.api.port}/ws/events",
                header=[f"X-API-Key: {self.api_key}"],
                timeout=10,
                suppress_origin=True,  # not a browser: send no Origin header
            )
            try:
                run_id = self.trigger_demo_run(ws)
                finished = wait_for_run_finished(ws, run_id, RUN_TIMEOUT_SEC)
            finally:
                ws.close()
        except websocket.WebSocketException as exc:
            raise SmokeFailure(f"/ws/events: {type(exc).__name__}: {exc}") from None

        status = finished.get("status")
        if status != "done":
            raise SmokeFailure(f"run {run_id} finished {status}: {finished}")
        say(f"  run_finished {run_id}: done")
        self.check_demo_cards(run_id)

    def trigger_demo_run(self, ws: Any) -> str:
        """After the `hello` frame, queue the demo epic on a fresh build; its run id."""
        hello = json.loads(ws.recv())
        if hello.get("type") != "hello":
            raise SmokeFailure(f"first frame was {hello}, expected hello")
        say(f"  /ws/events hello (last_event_id {hello.get('last_event_id')})")

        build_id = f"smoke-{secrets.token_hex(4)}"
        answer = requests.post(
            self.api.url + "/v1/system/run-active",
            json={"path": DEMO_EPIC_PATH, "build_id": build_id},
            headers={"X-API-Key": self.api_key},
            timeout=10,
        )
        run_id = str(expect_status(answer, 202, "run-active").get("session_id"))
        say(f"  run-active {DEMO_EPIC_PATH}: 202, run {run_id}, build {build_id}")
        return run_id

    def check_demo_cards(self, run_id: str) -> None:
        backlog = requests.get(
            f"{self.api.url}/v1/runs/{run_id}/backlog",
            headers={"X-API-Key": self.api_key},
            timeout=10,
        )
        cards = cards_of(expect_status(backlog, 200, "backlog"))
        statuses = {str(card.get("id")): card.get("status") for card in cards}
        if len(cards) != 2 or set(statuses.values()) != {"done"}:
            raise SmokeFailure(f"expected both demo cards done, got {statuses}")
        say(f"  backlog: {', '.join(f'{k} {v}' for k, v in statuses.items())}")

    def check_docker(self) -> None:
        reason = self.docker_unavailable()
        if reason:
            say(f"docker: skipped ({reason})")
            return
        build = subprocess.run(
            ["docker", "build", "-t", IMAGE_TAG, "."],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SEC,
        )
        if build.returncode != 0:
            raise SmokeFailure(
                f"docker build exited {build.returncode}\n"
                + tail(build.stdout + build.stderr)
            )
        say(f"  docker build -t {IMAGE_TAG} .: ok")
        self.probe_container()

    def docker_unavailable(self) -> str | None:
        """Why the image step cannot run here, or None when it can."""
        if self.skip_docker:
            return "--skip-docker"
        if shutil.which("docker") is None:
            return "docker CLI not found"
        info = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=30
        )
        if info.returncode != 0:
            lines = [line.strip() for line in info.stderr.splitlines() if line.strip()]
            return lines[-1] if lines else f"docker info exited {info.returncode}"
        return None

    def probe_container(self) -> None:
        name = f"orket-release-smoke-{secrets.token_hex(4)}"
        port = free_port()
        env = {**os.environ, "ORKET_API_KEY": self.api_key}
        started = subprocess.run(
            ["docker", "run", "-d", "--name", name, "-e", "ORKET_API_KEY"]
            + ["-p", f"127.0.0.1:{port}:8082", IMAGE_TAG],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            if started.returncode != 0:
                raise SmokeFailure(f"docker run failed: {tail(started.stderr, 5)}")
            url = f"http://127.0.0.1:{port}/health"
            if not wait_for_health(url, DOCKER_HEALTH_TIMEOUT_SEC, lambda: True):
                logs = subprocess.run(
                    ["docker", "logs", name], capture_output=True, text=True, timeout=30
                )
                raise SmokeFailure(
                    "container /health not 200 within 60 s; its log ends:\n"
                    + tail(logs.stdout + logs.stderr)
                )
            say(f"  container {name}: /health 200")
        finally:
            subprocess.run(
                ["docker", "rm", "-f", name], capture_output=True, timeout=60
            )

    def stop_servers(self) -> bool:
        stopped = True
        for server in (self.webhook, self.api):
            stopped &= server.stop()
        return stopped


def stored_revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version"))
            versions = [row[0] for row in rows]
    finally:
        engine.dispose()
    return versions[0] if len(versions) == 1 else None


def expect_status(response: requests.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise SmokeFailure(
            f"{what}: HTTP {response.status_code} (expected {status}): "
            f"{response.text[:300]}"
        )
    try:
        return response.json()
    except ValueError:
        raise SmokeFailure(
            f"{what}: answer is not JSON: {response.text[:300]}"
        ) from None


def wait_for_run_finished(ws: Any, run_id: str, timeout: float) -> dict[str, Any]:
    """Read frames until `run_finished` for `run_id`; its `data` object."""
    import websocket

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SmokeFailure(f"no run_finished for run {run_id} within 60 s")
        ws.settimeout(remaining)
        try:
            frame = json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            continue
        except websocket.WebSocketConnectionClosedException:
            raise SmokeFailure("/ws/events closed before run_finished") from None
        if frame.get("event") == "run_finished" and frame.get("run_id") == run_id:
            return dict(frame.get("data") or {})


def cards_of(body: Any) -> list[dict[str, Any]]:
    """The card list of a backlog answer (a list, or an object holding one)."""
    if isinstance(body, dict):
        body = body.get("cards", body.get("items", []))
    return [card for card in body if isinstance(card, dict)]


@orket.command("smoke")
@click.option(
    "--skip-docker", is_flag=True, help="Skip building and probing the Docker image."
)
def smoke_command(skip_docker: bool) -> None:
    """Release smoke: tests, migrations, servers, webhook, demo run, image."""
    raise SystemExit(ReleaseSmoke(PROJECT_ROOT, skip_docker).run())
