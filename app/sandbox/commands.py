"""Running `docker` and `git` for sandboxes (SPEC SBX-4, SEC-11).

Commands run without a shell, from argument lists, with a minimal environment and
a deadline. Each child starts its own session: it has no controlling terminal, so
`git` can never stop to ask for a password, and on a timeout the whole process
group (Compose starts helpers of its own) is killed, not just the first process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PASSED_VARIABLES = ("PATH", "HOME", "LANG")
DOCKER_INFO_TIMEOUT_SEC = 10.0
MAX_OUTPUT_CHARS = 1024 * 1024
ENGINE_UNAVAILABLE = "docker engine not available"


class CommandMissing(Exception):
    """The program is not on the `PATH` given to children."""


class CommandTimeout(Exception):
    def __init__(self, program: str, seconds: float) -> None:
        self.program = program
        self.seconds = seconds
        super().__init__(f"{program} timed out after {seconds:g} s")


class DockerUnavailable(Exception):
    """No `docker` binary, no daemon, or no Compose."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def process_environment() -> Mapping[str, str]:
    """The server's own environment, source of the few variables children get.

    This is the one place the package looks at `os.environ` after start-up: these
    are not settings but what `docker` and `git` need to find themselves, their
    configuration and the daemon (SBX-4 passes them through, and nothing else).
    """
    return os.environ


def command_environment(source: Mapping[str, str]) -> dict[str, str]:
    """`PATH`, `HOME`, `LANG` and every `DOCKER_*` variable of `source`."""
    return {
        name: value
        for name, value in source.items()
        if name in PASSED_VARIABLES or name.startswith("DOCKER_")
    }


class CommandRunner:
    """Runs programs within an optional overall deadline (`time.monotonic()`)."""

    def __init__(
        self, environ: Mapping[str, str], *, deadline: float | None = None
    ) -> None:
        self.env = command_environment(environ)
        self.deadline = deadline

    def has(self, program: str) -> bool:
        return self._which(program) is not None

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: Path | None = None,
    ) -> CommandResult:
        """Run `argv` for at most `timeout` seconds (and never past the deadline)."""
        program = self._which(argv[0])
        if program is None:
            raise CommandMissing(argv[0])
        seconds = self._allowed(timeout)
        if seconds <= 0:
            raise CommandTimeout(argv[0], timeout)
        process = subprocess.Popen(
            [program, *argv[1:]],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise CommandTimeout(argv[0], seconds) from None
        return CommandResult(process.returncode, _text(stdout), _text(stderr))

    def _which(self, program: str) -> str | None:
        return shutil.which(program, path=self.env.get("PATH", ""))

    def _allowed(self, timeout: float) -> float:
        if self.deadline is None:
            return timeout
        return min(timeout, self.deadline - time.monotonic())


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")[-MAX_OUTPUT_CHARS:]


class DockerCli:
    """`docker` and Compose: v2 (`docker compose`), else v1 (`docker-compose`)."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self._compose: list[str] | None = None

    def without_deadline(self) -> DockerCli:
        """The same Compose program and environment, free of the job's deadline."""
        copy = DockerCli(CommandRunner(self.runner.env))
        copy._compose = self._compose
        return copy

    def engine_available(self) -> bool:
        """`docker info` answers within 10 s: a binary and a reachable daemon."""
        try:
            result = self.runner.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                timeout=DOCKER_INFO_TIMEOUT_SEC,
            )
        except (CommandMissing, CommandTimeout, OSError):
            return False
        return result.ok

    def compose_command(self) -> list[str]:
        """The Compose program, found once per `DockerCli`."""
        if self._compose is None:
            self._compose = self._find_compose()
        return list(self._compose)

    def _find_compose(self) -> list[str]:
        try:
            version = self.runner.run(
                ["docker", "compose", "version"], timeout=DOCKER_INFO_TIMEOUT_SEC
            )
        except (CommandMissing, OSError):
            raise DockerUnavailable(ENGINE_UNAVAILABLE) from None
        if version.ok:
            return ["docker", "compose"]
        if self.runner.has("docker-compose"):
            log.info("docker compose is missing; using docker-compose v1")
            return ["docker-compose"]
        raise DockerUnavailable("docker compose not available")

    @property
    def is_compose_v1(self) -> bool:
        return self.compose_command() == ["docker-compose"]

    def compose(
        self,
        project: str,
        compose_file: Path | None,
        *args: str,
        timeout: float,
    ) -> CommandResult:
        """`<compose> -p <project> [-f <file>] <args>`, run in the file's directory."""
        argv = [*self.compose_command(), "-p", project]
        if compose_file is not None:
            argv += ["-f", str(compose_file)]
        cwd = compose_file.parent if compose_file is not None else None
        return self.runner.run([*argv, *args], timeout=timeout, cwd=cwd)

    def containers(
        self, project: str, compose_file: Path | None, *, timeout: float
    ) -> list[dict[str, Any]]:
        """The project's containers as Compose v2 `ps --format json` describes them."""
        if self.is_compose_v1:
            return self._containers_v1(project, compose_file, timeout=timeout)
        result = self.compose(
            project, compose_file, "ps", "--format", "json", timeout=timeout
        )
        if not result.ok:
            raise DockerUnavailable(ENGINE_UNAVAILABLE)
        try:
            return parse_ps_output(result.stdout)
        except ValueError:
            log.warning("unreadable ps output for %s", project)
            return []

    def _containers_v1(
        self, project: str, compose_file: Path | None, *, timeout: float
    ) -> list[dict[str, Any]]:
        # Compose v1 has no JSON output: list the ids, then ask the engine.
        listed = self.compose(project, compose_file, "ps", "-q", timeout=timeout)
        if not listed.ok:
            raise DockerUnavailable(ENGINE_UNAVAILABLE)
        ids = listed.stdout.split()
        if not ids:
            return []
        inspected = self.runner.run(["docker", "inspect", *ids], timeout=timeout)
        if not inspected.ok:
            raise DockerUnavailable(ENGINE_UNAVAILABLE)
        try:
            return [_from_inspect(item) for item in _json_list(inspected.stdout)]
        except ValueError:
            log.warning("unreadable inspect output for %s", project)
            return []


def parse_ps_output(text: str) -> list[dict[str, Any]]:
    """`ps --format json`: a JSON array (Compose < 2.21) or one object per line."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return _json_list(stripped)
    containers = []
    for line in stripped.splitlines():
        if line.strip():
            item = json.loads(line)
            if isinstance(item, dict):
                containers.append(item)
    return containers


def _json_list(text: str) -> list[dict[str, Any]]:
    value = json.loads(text)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _from_inspect(item: dict[str, Any]) -> dict[str, Any]:
    state = item.get("State") or {}
    labels = (item.get("Config") or {}).get("Labels") or {}
    return {
        "ID": str(item.get("Id", ""))[:12],
        "Service": labels.get("com.docker.compose.service", ""),
        "State": state.get("Status", ""),
        "Health": (state.get("Health") or {}).get("Status", ""),
    }


def container_is_up(container: dict[str, Any]) -> bool:
    """Running, and not failing a health check of its own."""
    return (
        str(container.get("State", "")).lower() == "running"
        and str(container.get("Health", "")).lower() != "unhealthy"
    )
