"""Deploying and stopping one sandbox (SPEC SBX-4).

Deploy: check the engine, take ports, clone the merged commit into `src/`, write
the compose file and `.env`, `up -d --build`, record the containers, mark the row
`running` and owe the PR a comment. Any failure takes the project down (best
effort), releases the ports and leaves the row `failed` with a clear `last_error`,
from which the same key can be deployed again.

Stop: `stopping`, `down -v --remove-orphans`, then `deleted` with its ports
released; a failure puts the previous status back.

No transaction is held while a command runs; every row change is its own short
write. Error texts never carry the token, a password or a host path.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import Database
from app.models.base import dump_json, utcnow
from app.models.runtime import Sandbox
from app.sandbox.commands import (
    ENGINE_UNAVAILABLE,
    CommandMissing,
    CommandResult,
    CommandRunner,
    CommandTimeout,
    DockerCli,
    DockerUnavailable,
    process_environment,
)
from app.sandbox.comment import queue_sandbox_comment
from app.sandbox.identity import compose_project_for
from app.sandbox.ports import NoFreePorts, allocate_ports, release_ports
from app.sandbox.registry import STOPPABLE_STATUSES, sandbox_urls
from app.sandbox.stacks import (
    Stack,
    UnsupportedTechStack,
    env_file_text,
    stack_for,
    to_yaml,
)

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

COMPOSE_FILE = "docker-compose.yml"
ENV_FILE = ".env"
SOURCE_DIR = "src"
CLEANUP_TIMEOUT_SEC = 120.0
RECORD_TIMEOUT_SEC = 60.0
ERROR_LIMIT = 500
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")


class SandboxFailure(Exception):
    """A step failed; `detail` is the operator-facing `last_error`."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class DeployRequest:
    """What a `sandbox_deploy` job's `params_json` asks for."""

    tech_stack: str
    clone_url: str | None
    commit_sha: str | None
    repo_full_name: str | None
    pr_number: int | None
    rock_id: str | None
    project_name: str | None

    @classmethod
    def from_params(cls, params: dict[str, Any], settings: Settings) -> DeployRequest:
        commit = params.get("commit_sha") or params.get("merge_sha")
        pr_number = params.get("pr_number")
        repo = _text_or_none(params.get("repo_full_name"))
        return cls(
            tech_stack=str(params.get("tech_stack") or settings.sandbox_tech_stack),
            clone_url=_text_or_none(params.get("clone_url")),
            commit_sha=_text_or_none(commit or params.get("commit")),
            repo_full_name=repo,
            pr_number=pr_number if isinstance(pr_number, int) else None,
            rock_id=_text_or_none(params.get("rock_id")),
            project_name=_text_or_none(params.get("project_name"))
            or (repo.rsplit("/", 1)[-1] if repo else None),
        )


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


class Deployment:
    """One run of a `sandbox_deploy` job for `sandbox_id`."""

    def __init__(
        self,
        services: Services,
        sandbox_id: str,
        request: DeployRequest,
        *,
        run_id: str | None = None,
    ) -> None:
        self.settings = services.settings
        self.runtime_db = services.runtime_db
        self.webhook_db = services.webhook_db
        self.events = services.events
        self.sandbox_id = sandbox_id
        self.request = request
        self.run_id = run_id
        self.work_dir = self.settings.sandboxes_root / sandbox_id
        self.project = compose_project_for(sandbox_id)
        self.secrets: dict[str, str] = {}
        self.compose_started = False
        deadline = time.monotonic() + self.settings.sandbox_timeout_sec
        self.docker = DockerCli(CommandRunner(process_environment(), deadline=deadline))

    @property
    def compose_file(self) -> Path:
        return self.work_dir / COMPOSE_FILE

    def run(self) -> str | None:
        """Deploy; None on success (or nothing to do), else the error text."""
        current = _load(self.runtime_db, self.sandbox_id)
        if current is not None and current.status in ("running", "unhealthy"):
            log.info("sandbox %s is already %s", self.sandbox_id, current.status)
            return None
        try:
            stack = stack_for(self.request.tech_stack)
        except UnsupportedTechStack as refusal:
            self._refuse(refusal.detail)
            return refusal.detail
        self._begin(stack)
        try:
            self._deploy(stack)
        except SandboxFailure as failure:
            self._fail(failure.detail)
            return failure.detail
        except Exception:
            # Unexpected: leave no ports held and no half-started project, then let
            # the job runner record the error on the run.
            self._fail("Internal error during deployment")
            raise
        return None

    def _deploy(self, stack: Stack) -> None:
        if not self.docker.engine_available():
            raise SandboxFailure(ENGINE_UNAVAILABLE)
        try:
            ports = allocate_ports(
                self.settings, self.runtime_db, self.sandbox_id, stack.roles
            )
        except NoFreePorts as exc:
            raise SandboxFailure(exc.detail) from None
        self.events.emit(
            "sandbox_create",
            {
                "sandbox_id": self.sandbox_id,
                "rock_id": self.request.rock_id,
                "tech_stack": stack.name,
                "ports": ports,
            },
            run_id=self.run_id,
        )
        self._clone()
        self._write_files(stack, ports)
        self._compose_up()
        self._mark_running(self._container_ids())

    def _begin(self, stack: Stack) -> None:
        """The row is `creating`, without ports, whatever an earlier attempt left."""
        with self.runtime_db.transaction() as session:
            row = session.get(Sandbox, self.sandbox_id)
            if row is None:
                row = Sandbox(id=self.sandbox_id, created_at=utcnow())
                session.add(row)
            self._describe(row, stack.name)
            row.status = "creating"
            row.work_dir = str(self.work_dir)
            row.container_ids_json = None
            row.health_checks_passed = 0
            row.health_checks_failed = 0
            row.last_health_check = None
            row.deployed_at = None
            row.deleted_at = None
            row.last_error = None
            release_ports(row)
            row.updated_at = utcnow()

    def _describe(self, row: Sandbox, tech_stack: str) -> None:
        request = self.request
        row.tech_stack = tech_stack[:40]
        row.compose_project = self.project
        row.rock_id = request.rock_id
        row.project_name = request.project_name
        row.repo_full_name = request.repo_full_name
        row.pr_number = request.pr_number
        row.source_ref = (request.commit_sha or "")[:64] or None
        row.public_host = self.settings.sandbox_public_host

    def _refuse(self, detail: str) -> None:
        """An unsupported stack: recorded as `failed`, nothing allocated or run."""
        with self.runtime_db.transaction() as session:
            row = session.get(Sandbox, self.sandbox_id)
            if row is None:
                row = Sandbox(id=self.sandbox_id, created_at=utcnow())
                session.add(row)
            self._describe(row, self.request.tech_stack)
            row.status = "failed"
            row.last_error = detail
            release_ports(row)
            row.updated_at = utcnow()
        self._emit_failed(detail)

    def _clone(self) -> None:
        url = self.request.clone_url
        if not url:
            raise SandboxFailure("No clone URL given")
        if urlsplit(url).scheme not in ("http", "https"):
            raise SandboxFailure("Clone URL must use http or https")
        self.work_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        source = self.work_dir / SOURCE_DIR
        if source.exists():
            shutil.rmtree(source)
        auth = _git_auth(self.settings, url)
        self._git([*auth, "clone", "--depth", "1", "--", url, SOURCE_DIR], "git clone")
        if self.request.commit_sha:
            self._check_out(self.request.commit_sha, auth)

    def _check_out(self, sha: str, auth: list[str]) -> None:
        """Pin `src/` to the merge commit when the branch has moved past it."""
        if not _SHA.match(sha):
            raise SandboxFailure("Invalid merge commit")
        head = self._git(["-C", SOURCE_DIR, "rev-parse", "HEAD"], "git rev-parse")
        if head.stdout.strip().lower().startswith(sha.lower()):
            return
        fetched = self._git(
            [*auth, "-C", SOURCE_DIR, "fetch", "--depth", "1", "origin", sha],
            "git fetch",
            check=False,
        )
        if not fetched.ok:
            raise SandboxFailure(f"Merge commit {sha} not found")
        self._git(
            ["-C", SOURCE_DIR, "checkout", "--detach", "FETCH_HEAD"], "git checkout"
        )

    def _git(self, args: list[str], what: str, *, check: bool = True) -> CommandResult:
        try:
            result = self.docker.runner.run(
                ["git", *args],
                timeout=self.settings.sandbox_timeout_sec,
                cwd=self.work_dir,
            )
        except CommandMissing:
            raise SandboxFailure("git not available") from None
        except CommandTimeout:
            raise SandboxFailure(f"{what} timed out") from None
        if check and not result.ok:
            raise SandboxFailure(f"{what} failed: {self._summary(result)}")
        return result

    def _write_files(self, stack: Stack, ports: dict[str, int]) -> None:
        self.secrets = stack.generate_secrets()
        document = stack.compose_document(ports, self.settings.sandbox_public_host)
        self.compose_file.write_text(to_yaml(document), encoding="utf-8")
        write_private_file(self.work_dir / ENV_FILE, env_file_text(self.secrets))

    def _compose_up(self) -> None:
        try:
            self.docker.compose_command()
            self.compose_started = True
            result = self.docker.compose(
                self.project,
                self.compose_file,
                "up",
                "-d",
                "--build",
                timeout=self.settings.sandbox_timeout_sec,
            )
        except DockerUnavailable as exc:
            raise SandboxFailure(str(exc)) from None
        except CommandTimeout:
            limit = f"{self.settings.sandbox_timeout_sec:g}"
            raise SandboxFailure(
                f"docker compose up timed out after {limit} s"
            ) from None
        if not result.ok:
            raise SandboxFailure(f"docker compose up failed: {self._summary(result)}")

    def _container_ids(self) -> list[str]:
        try:
            containers = self.docker.containers(
                self.project, self.compose_file, timeout=RECORD_TIMEOUT_SEC
            )
        except (DockerUnavailable, CommandTimeout, CommandMissing):
            log.warning("could not list the containers of %s", self.sandbox_id)
            return []
        return [str(item.get("ID")) for item in containers if item.get("ID")]

    def _mark_running(self, container_ids: list[str]) -> None:
        with self.runtime_db.transaction() as session:
            row = session.get(Sandbox, self.sandbox_id)
            if row is None:
                raise SandboxFailure("Sandbox row disappeared during deployment")
            row.status = "running"
            row.deployed_at = utcnow()
            row.container_ids_json = dump_json(container_ids)
            row.last_error = None
            row.updated_at = utcnow()
            urls = sandbox_urls(row)
        self.events.emit(
            "sandbox_deployed",
            {
                "sandbox_id": self.sandbox_id,
                "api_url": urls["api_url"],
                "frontend_url": urls["frontend_url"],
            },
            run_id=self.run_id,
        )
        self._owe_comment()

    def _owe_comment(self) -> None:
        row = _load(self.runtime_db, self.sandbox_id)
        if row is None:
            return
        try:
            queue_sandbox_comment(self.webhook_db, row)
        except SQLAlchemyError as exc:
            # The sandbox runs; only the announcement is lost, and operators see why.
            self.events.emit_error("sandbox_comment", exc, run_id=self.run_id)

    def _fail(self, detail: str) -> None:
        if self.compose_started:
            _take_down(self.docker, self.project, self.compose_file, "-v")
        with self.runtime_db.transaction() as session:
            row = session.get(Sandbox, self.sandbox_id)
            if row is not None:
                row.status = "failed"
                row.last_error = detail
                release_ports(row)
                row.updated_at = utcnow()
        self._emit_failed(detail)

    def _emit_failed(self, detail: str) -> None:
        log.warning("sandbox %s deployment failed: %s", self.sandbox_id, detail)
        self.events.emit(
            "sandbox_deploy_failed",
            {"sandbox_id": self.sandbox_id, "error": detail},
            level="error",
            run_id=self.run_id,
        )

    def _summary(self, result: CommandResult) -> str:
        return scrub_output(
            result.stderr or result.stdout,
            secrets=[*self.secrets.values(), *_credentials(self.settings)],
            paths=[str(self.work_dir), str(self.settings.data_path)],
        )


def stop_sandbox(
    services: Services, sandbox_id: str, *, run_id: str | None = None
) -> str | None:
    """Stop and delete the sandbox; None on success (or nothing to stop), else why."""
    runtime_db, events = services.runtime_db, services.events
    previous = _begin_stop(runtime_db, sandbox_id)
    if previous is None:
        log.info("sandbox %s has nothing to stop", sandbox_id)
        return None
    work_dir = services.settings.sandboxes_root / sandbox_id
    compose_file = work_dir / COMPOSE_FILE
    deadline = time.monotonic() + services.settings.sandbox_timeout_sec
    docker = DockerCli(CommandRunner(process_environment(), deadline=deadline))
    try:
        error = _down(services.settings, docker, sandbox_id, compose_file)
    except Exception:
        # Unexpected: put the previous status back before the job runner reports it.
        _restore(runtime_db, sandbox_id, previous, "Internal error while stopping")
        raise
    if error is not None:
        _restore(runtime_db, sandbox_id, previous, error)
        events.emit(
            "sandbox_delete_failed",
            {"sandbox_id": sandbox_id, "error": error},
            level="error",
            run_id=run_id,
        )
        return error
    _mark_deleted(runtime_db, sandbox_id)
    shutil.rmtree(work_dir, ignore_errors=True)
    events.emit("sandbox_deleted", {"sandbox_id": sandbox_id}, run_id=run_id)
    return None


def _begin_stop(runtime_db: Database, sandbox_id: str) -> str | None:
    """Mark the row `stopping`; its previous status, or None if it is not stoppable."""
    with runtime_db.transaction() as session:
        row = session.get(Sandbox, sandbox_id)
        if row is None or row.status not in STOPPABLE_STATUSES:
            return None
        previous = row.status
        row.status = "stopping"
        row.updated_at = utcnow()
    return previous


def _down(
    settings: Settings, docker: DockerCli, sandbox_id: str, compose_file: Path
) -> str | None:
    if not docker.engine_available():
        return ENGINE_UNAVAILABLE
    project = compose_project_for(sandbox_id)
    present = compose_file if compose_file.exists() else None
    try:
        result = docker.compose(
            project,
            present,
            "down",
            "-v",
            "--remove-orphans",
            timeout=settings.sandbox_timeout_sec,
        )
    except DockerUnavailable as exc:
        return str(exc)
    except CommandTimeout:
        return f"docker compose down timed out after {settings.sandbox_timeout_sec:g} s"
    if result.ok:
        return None
    summary = scrub_output(
        result.stderr or result.stdout,
        secrets=[*env_file_values(compose_file.parent), *_credentials(settings)],
        paths=[str(compose_file.parent), str(settings.data_path)],
    )
    return f"docker compose down failed: {summary}"


def _restore(runtime_db: Database, sandbox_id: str, status: str, error: str) -> None:
    with runtime_db.transaction() as session:
        row = session.get(Sandbox, sandbox_id)
        if row is not None:
            row.status = status
            row.last_error = error
            row.updated_at = utcnow()


def _mark_deleted(runtime_db: Database, sandbox_id: str) -> None:
    with runtime_db.transaction() as session:
        row = session.get(Sandbox, sandbox_id)
        if row is not None:
            row.status = "deleted"
            row.deleted_at = utcnow()
            row.last_error = None
            release_ports(row)
            row.updated_at = utcnow()


def _take_down(
    docker: DockerCli, project: str, compose_file: Path, *flags: str
) -> None:
    """Best-effort `down`, with its own time budget even after a deploy timed out."""
    cleanup = docker.without_deadline()
    present = compose_file if compose_file.exists() else None
    try:
        result = cleanup.compose(
            project, present, "down", *flags, timeout=CLEANUP_TIMEOUT_SEC
        )
    except (DockerUnavailable, CommandTimeout, CommandMissing, OSError):
        log.warning("cleanup of %s failed", project)
        return
    if not result.ok:
        log.warning("cleanup of %s exited %s", project, result.returncode)


def _load(runtime_db: Database, sandbox_id: str) -> Sandbox | None:
    with runtime_db.reader() as session:
        return session.get(Sandbox, sandbox_id)


def write_private_file(path: Path, content: str) -> None:
    """Write `content` readable by the owner only (0600), even if the file existed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(content)


def env_file_values(work_dir: Path) -> list[str]:
    """The generated passwords in a sandbox's `.env`, to hide them from any output."""
    path = work_dir / ENV_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [value for _, _, value in (line.partition("=") for line in lines) if value]


def _git_auth(settings: Settings, clone_url: str) -> list[str]:
    """`-c http.extraHeader=...` with the bot's credentials, for Gitea's own URLs only.

    The clone URL comes from a delivery; the token must never go to another host.
    """
    if not _same_origin(clone_url, settings.gitea_url):
        return []
    if settings.gitea_token:
        header = f"Authorization: token {settings.gitea_token}"
    elif settings.gitea_admin_password:
        pair = f"{settings.gitea_admin_user}:{settings.gitea_admin_password}"
        header = "Authorization: Basic " + base64.b64encode(pair.encode()).decode()
    else:
        return []
    return ["-c", f"http.extraHeader={header}"]


def _same_origin(url: str, base: str) -> bool:
    return _origin(url) is not None and _origin(url) == _origin(base)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _credentials(settings: Settings) -> list[str]:
    return [
        value
        for value in (settings.gitea_token, settings.gitea_admin_password)
        if value
    ]


def scrub_output(text: str, *, secrets: list[str], paths: list[str]) -> str:
    """The last lines of a command's output, without secrets or host paths."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    summary = mask_values(" ".join(lines[-3:]) if lines else "no output", secrets)
    for path in sorted(paths, key=len, reverse=True):
        if path:
            summary = summary.replace(path, ".")
    return summary[-ERROR_LIMIT:]


def mask_values(text: str, secrets: list[str]) -> str:
    """`text` with each secret (longest first) replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text
