"""Start-up checks and background workers of a served process (PROC-3, PROC-4).

The checks run in the gunicorn master (from the config module) so that a refusal is
one line and a non-zero exit, before any worker is forked. The workers start in
`post_worker_init`, inside the one gunicorn worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from flask import Flask

from app.config import Settings, SettingsError, load_settings
from app.migrate import MigrationError, require_head
from app.services import Services, package_version
from app.serving.lock import ApiProcessLock, LockHeld

log = logging.getLogger(__name__)

PACKAGED_FIXTURES = Path(__file__).resolve().parent.parent / "assets" / "verification"
DATA_SUBDIRS = ("default", "verification", "builds", "sandboxes", "run")


class StartupError(Exception):
    """A start-up precondition failed; the message is the one line operators see."""


def refuse(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        refuse(str(exc))
        raise  # unreachable; keeps type checkers happy


def check_api_security(settings: Settings) -> None:
    """SEC-1: no key, no API, unless a keyless development run on loopback."""
    if settings.api_keys:
        return
    if not settings.dev_no_auth:
        raise StartupError(
            "ORKET_API_KEY is not set; refusing to start the API (set it, or "
            "ORKET_DEV_NO_AUTH=1 with a loopback ORKET_HOST for development)"
        )
    if not settings.host_is_loopback:
        raise StartupError(
            f"ORKET_DEV_NO_AUTH=1 needs a loopback ORKET_HOST, not {settings.host}; "
            "set ORKET_API_KEY instead"
        )


def check_webhook_security(settings: Settings) -> None:
    if not settings.webhook_secret:
        raise StartupError(
            "GITEA_WEBHOOK_SECRET is not set; refusing to start the webhook"
        )
    if settings.enable_webhook_test_endpoint and not settings.webhook_test_token:
        raise StartupError(
            "ORKET_ENABLE_WEBHOOK_TEST_ENDPOINT=true requires ORKET_WEBHOOK_TEST_TOKEN"
        )


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory (mode 0750) and its fixed subdirectories."""
    root = settings.data_path
    try:
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
        for name in DATA_SUBDIRS:
            (root / name).mkdir(mode=0o750, exist_ok=True)
        probe = root / "run" / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"Cannot use the data directory {root}: {exc.strerror or exc}"
        ) from None


def check_databases(settings: Settings) -> None:
    try:
        require_head("runtime", settings.runtime_db_url)
        require_head("webhook", settings.webhook_db_url)
    except MigrationError as exc:
        raise StartupError(str(exc)) from None


def precheck(settings: Settings, process: str) -> None:
    """Every refusal of PROC-3, in order; raises StartupError with one line."""
    if process == "api":
        check_api_security(settings)
    else:
        check_webhook_security(settings)
    prepare_data_dir(settings)
    check_databases(settings)
    if process == "api":
        probe = ApiProcessLock(settings)
        try:
            probe.acquire()
        except LockHeld as exc:
            raise StartupError(str(exc)) from None
        probe.release()


def precheck_or_exit(settings: Settings, process: str) -> None:
    try:
        precheck(settings, process)
    except StartupError as exc:
        refuse(str(exc))


def copy_packaged_fixtures(settings: Settings) -> list[str]:
    """Copy packaged fixtures into `<data>/verification/` where absent, never over."""
    copied = []
    for source in sorted(PACKAGED_FIXTURES.rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts:
            continue
        relative = source.relative_to(PACKAGED_FIXTURES)
        target = settings.verification_root / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(str(relative))
    return copied


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_serving(app: Flask) -> None:
    """Start the process's background work; called once in the gunicorn worker."""
    services: Services = app.extensions["orket"]
    settings = services.settings
    if services.process == "api":
        lock = ApiProcessLock(settings)
        try:
            lock.acquire()
        except LockHeld as exc:
            refuse(str(exc))
        services.on_stop(lock.release)
        copy_packaged_fixtures(settings)
        _start_api_workers(app, services)
        bind = bind_address(settings.host, settings.port)
    else:
        _start_webhook_workers(app, services)
        bind = bind_address(settings.webhook_host, settings.webhook_port)
    services.events.emit(
        "server_started",
        {"process": services.process, "version": package_version(), "bind": bind},
    )
    log.info(
        "%s process serving on %s (host %s)",
        services.process,
        bind,
        socket.gethostname(),
    )


def _start_api_workers(app: Flask, services: Services) -> None:
    """Event tail, restart sweep, job runner and housekeeper of the API process.

    The sweep (JOB-5) runs before the dispatcher claims anything: this process's
    worker id may equal the dead one's (same host name and pid in a container).
    Stop steps run in reverse: housekeeper, job runner (PROC-4 wait), tail.
    """
    from app.housekeeping import Housekeeper
    from app.jobs import JobRunner, sweep_interrupted
    from app.stream import EventTail
    from app.ws import event_hub

    hub = event_hub(services)
    tail = EventTail(services.settings, services.runtime_db, hub)
    services.events.add_listener(tail.wake)
    tail.start()
    services.on_shutdown(hub.close_all)
    services.on_stop(tail.stop)

    sweep_interrupted(services.runtime_db, services.events)
    runner = JobRunner(services)
    services.extras["job_runner"] = runner
    runner.start()
    services.on_shutdown(runner.begin_shutdown)
    services.on_stop(runner.stop)

    housekeeper = Housekeeper(services, running_jobs=runner.active_job_ids)
    housekeeper.start()
    services.on_stop(housekeeper.stop)


def _start_webhook_workers(app: Flask, services: Services) -> None:
    """The outbox worker of the webhook process."""
    from app.webhook.outbox import OutboxWorker

    worker = OutboxWorker(
        services.settings, services.webhook_db, services.runtime_db, services.events
    )
    worker.start()
    services.extras["outbox_worker"] = worker
    services.on_shutdown(worker.request_stop)
    services.on_stop(worker.stop)


def stop_serving(app: Flask) -> None:
    services: Services = app.extensions["orket"]
    services.stop()
