"""Periodic health of deployed sandboxes, and their logs (SPEC SBX-5)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.db import Database
from app.models.base import utcnow
from app.models.runtime import Sandbox
from app.sandbox.commands import (
    ENGINE_UNAVAILABLE,
    CommandMissing,
    CommandRunner,
    CommandTimeout,
    DockerCli,
    DockerUnavailable,
    container_is_up,
    process_environment,
)
from app.sandbox.deploy import COMPOSE_FILE, env_file_values, mask_values
from app.sandbox.registry import CHECKED_STATUSES
from app.sandbox.stacks import STACKS

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SEC = 30.0
LOGS_TIMEOUT_SEC = 10.0
LOG_TAIL = 100


class SandboxNotFound(Exception):
    detail = "Not Found"


class UnknownSandboxService(Exception):
    def __init__(self, service: str, known: tuple[str, ...]) -> None:
        self.service = service
        self.known = known
        self.detail = f"Unknown service {service}; expected one of {', '.join(known)}"
        super().__init__(self.detail)


class DockerEngineUnavailable(Exception):
    detail = ENGINE_UNAVAILABLE


class SandboxLogsTimeout(Exception):
    detail = "Sandbox logs timed out"


@dataclass(frozen=True)
class _Target:
    id: str
    project: str
    compose_file: Path | None
    work_dir: Path | None
    services: tuple[str, ...]


def check_sandbox_health(services: Services) -> dict[str, str]:
    """One health pass over `running`/`unhealthy` sandboxes: id → passed | failed.

    All expected services running → `health_checks_passed + 1` and `running`;
    anything else (a stopped container, no engine) → `health_checks_failed + 1`
    and `unhealthy`.
    """
    docker = DockerCli(CommandRunner(process_environment()))
    outcomes: dict[str, str] = {}
    for target in _checked_targets(services.runtime_db):
        passed = _all_running(docker, target)
        if _record(services.runtime_db, target.id, passed):
            outcomes[target.id] = "passed" if passed else "failed"
    if outcomes:
        log.info("sandbox health: %s", outcomes)
    return outcomes


def _checked_targets(runtime_db: Database) -> list[_Target]:
    with runtime_db.reader() as session:
        rows = session.scalars(
            select(Sandbox).where(Sandbox.status.in_(CHECKED_STATUSES))
        )
        return [_target(row) for row in rows]


def _target(row: Sandbox) -> _Target:
    stack = STACKS.get(row.tech_stack)
    work_dir = Path(row.work_dir) if row.work_dir else None
    compose_file = work_dir / COMPOSE_FILE if work_dir is not None else None
    return _Target(
        id=row.id,
        project=row.compose_project,
        compose_file=compose_file
        if compose_file is not None and compose_file.exists()
        else None,
        work_dir=work_dir,
        services=stack.services if stack is not None else (),
    )


def _all_running(docker: DockerCli, target: _Target) -> bool:
    try:
        containers = docker.containers(
            target.project, target.compose_file, timeout=HEALTH_TIMEOUT_SEC
        )
    except (DockerUnavailable, CommandMissing, CommandTimeout):
        return False
    if not containers or not all(container_is_up(item) for item in containers):
        return False
    present = {str(item.get("Service", "")) for item in containers}
    return all(service in present for service in target.services)


def _record(runtime_db: Database, sandbox_id: str, passed: bool) -> bool:
    """Count the result unless the sandbox left the checked statuses meanwhile."""
    with runtime_db.transaction() as session:
        row = session.get(Sandbox, sandbox_id)
        if row is None or row.status not in CHECKED_STATUSES:
            return False
        if passed:
            row.health_checks_passed += 1
            row.status = "running"
        else:
            row.health_checks_failed += 1
            row.status = "unhealthy"
        row.last_health_check = utcnow()
        row.updated_at = utcnow()
    return True


def sandbox_logs(services: Services, sandbox_id: str, service: str | None) -> str:
    """The last 100 lines of the sandbox's (or one service's) logs, within 10 s."""
    with services.runtime_db.reader() as session:
        row = session.get(Sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        target = _target(row)
    if service is not None and service not in target.services:
        raise UnknownSandboxService(service, target.services)
    deadline = time.monotonic() + LOGS_TIMEOUT_SEC
    docker = DockerCli(CommandRunner(process_environment(), deadline=deadline))
    args = ["logs", "--no-color", f"--tail={LOG_TAIL}"]
    if service is not None:
        args.append(service)
    try:
        result = docker.compose(
            target.project, target.compose_file, *args, timeout=LOGS_TIMEOUT_SEC
        )
        if not result.ok and not docker.engine_available():
            raise DockerEngineUnavailable()
    except (CommandMissing, DockerUnavailable):
        raise DockerEngineUnavailable() from None
    except CommandTimeout:
        raise SandboxLogsTimeout() from None
    return _mask_secrets(result.stdout, target.work_dir)


def _mask_secrets(text: str, work_dir: Path | None) -> str:
    """A service may print its own configuration: hide the sandbox's passwords."""
    if work_dir is None:
        return text
    return mask_values(text, env_file_values(work_dir))
