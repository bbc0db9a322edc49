"""Fixture verification runner (SPEC §8, VER-1..VER-4).

`run_verification` checks a card's scenarios by running its fixture in an isolated
child process (`verification_child.py`): clean environment, resource limits, no
network, a wall-clock timeout, and no descendant left alive afterwards. It never
imports Flask; the API, the CLI, the engine and the tests all call it directly.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import psutil

from app.config import Settings

CHILD_PROGRAM = Path(__file__).with_name("verification_child.py")
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_RESULT_BYTES = 256 * 1024
STDERR_KEPT_BYTES = 2048
EXIT_POLL_SEC = 0.02
READ_CHUNK_BYTES = 65536

NO_FIXTURE_LINE = "No verification fixture defined. Skipping empirical tests."
FATAL_PREFIX = "FATAL ERROR loading fixture: "

# At most four fixture processes at a time in this process (VER-2).
_fixture_slots = threading.BoundedSemaphore(4)

Emit = Callable[..., None]


class FixtureOutsideRoot(Exception):
    """The fixture path resolves outside the verification root."""


class _ProtocolError(Exception):
    """The child's result document is missing or malformed."""


@dataclass
class _ChildOutcome:
    """What the fixture process reported, or why nothing usable came back."""

    network: str | None = None
    fatal_line: str | None = None
    fatal_detail: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


def run_verification(
    settings: Settings,
    fixture_path: str | None,
    scenarios: list[dict],
    workspace: Path,
    emit: Emit | None = None,
    card_id: str | None = None,
    run_id: str | None = None,
) -> dict:
    """Run `fixture_path` against `scenarios` and return the VER-3 result.

    `emit(event, data, *, level, run_id, card_id)` receives the EVT-4
    verification events when given.
    """
    started_at = _utc_now()
    clock = time.monotonic()
    if not fixture_path:
        return _result(started_at, clock, [NO_FIXTURE_LINE], [], passed=0, failed=0)
    send = _event_sender(emit, card_id, run_id)
    send("verification_started")
    scenarios = [
        _normalised(scenario, index) for index, scenario in enumerate(scenarios)
    ]
    logs = [f"--- Verification Started at {started_at} ---"]

    outcome = _check_and_run(settings, fixture_path, scenarios, workspace, send)
    if outcome.fatal_line is not None:
        logs += [outcome.fatal_line, *outcome.fatal_detail]
        rows = [_row(scenario, "fail", None) for scenario in scenarios]
        passed = 0
    else:
        lines, rows = _compare(scenarios, outcome.results)
        logs += lines
        passed = sum(row["status"] == "pass" for row in rows)
    failed = len(rows) - passed
    logs.append(f"--- Verification Complete: {passed} Passed, {failed} Failed ---")

    result = _result(
        started_at,
        clock,
        logs,
        rows,
        passed=passed,
        failed=failed,
        fatal_error=outcome.fatal_line,
        network=outcome.network,
    )
    send(
        "verification_completed",
        passed=passed,
        failed=failed,
        total=len(rows),
        fatal=result["fatal"],
        network=outcome.network,
    )
    return result


def resolve_fixture(settings: Settings, fixture_path: str) -> Path:
    """The real path of a fixture, per VER-1; raises FixtureOutsideRoot."""
    root = settings.verification_root.resolve()
    given = Path(fixture_path)
    if given.is_absolute():
        raise FixtureOutsideRoot(fixture_path)
    base = settings.data_path if fixture_path.startswith("verification/") else root
    try:
        candidate = (base / given).resolve()
    except (OSError, ValueError) as exc:  # NUL bytes, symlink loops
        raise FixtureOutsideRoot(fixture_path) from exc
    if not candidate.is_relative_to(root):
        raise FixtureOutsideRoot(fixture_path)
    return candidate


# Steps ----------------------------------------------------------------------


def _check_and_run(
    settings: Settings,
    fixture_path: str,
    scenarios: list[dict],
    workspace: Path,
    send: Callable[..., None],
) -> _ChildOutcome:
    """Apply the VER-1 path rules, then run the fixture; fatal outcomes are sent."""
    try:
        fixture = resolve_fixture(settings, fixture_path)
    except FixtureOutsideRoot:
        send(
            "verification_security_violation", level="error", fixture_path=fixture_path
        )
        return _ChildOutcome(
            fatal_line=(
                f"SECURITY VIOLATION: Fixture path '{fixture_path}' is outside the "
                "verification directory 'verification/'."
            )
        )
    if not fixture.is_file():
        shown = (
            "verification/"
            + fixture.relative_to(settings.verification_root.resolve()).as_posix()
        )
        outcome = _ChildOutcome(fatal_line=f"ERROR: Fixture file not found at {shown}")
    else:
        outcome = _run_child(settings, fixture, scenarios, workspace)
    if outcome.fatal_line is not None:
        send("verification_fatal", level="error", message=outcome.fatal_line)
    return outcome


def _run_child(
    settings: Settings, fixture: Path, scenarios: list[dict], workspace: Path
) -> _ChildOutcome:
    request = {
        "fixture_path": str(fixture),
        "scenarios": [
            {"id": s["id"], "input_data": s.get("input_data")} for s in scenarios
        ],
        "cpu_sec": settings.verify_cpu_sec,
        "mem_mb": settings.verify_mem_mb,
        "max_procs": settings.verify_max_procs,
        "network": settings.verify_network,
    }
    with (
        _fixture_slots,
        tempfile.TemporaryDirectory(
            prefix="orket-verify-", ignore_cleanup_errors=True
        ) as home,
    ):
        env = {
            "PATH": CHILD_PATH,
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": home,
            "ORKET_WORKSPACE": str(Path(workspace).resolve()),
        }
        child = subprocess.Popen(
            [sys.executable, "-I", "-B", str(CHILD_PROGRAM)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=settings.verification_root,
            env=env,
            start_new_session=True,
        )
        pipes = _pipes_of(child)
        try:
            return _supervise(
                child.pid,
                pipes,
                json.dumps(request).encode(),
                settings.verify_timeout_sec,
            )
        finally:
            _kill_process_tree(child.pid)
            child.wait()
            for stream in pipes:
                stream.close()


def _pipes_of(child: subprocess.Popen) -> tuple[IO[bytes], IO[bytes], IO[bytes]]:
    """stdin, stdout and stderr of a child started with three pipes."""
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    if stdin is None or stdout is None or stderr is None:
        raise RuntimeError("fixture process started without its pipes")
    return stdin, stdout, stderr


def _supervise(
    pid: int,
    pipes: tuple[IO[bytes], IO[bytes], IO[bytes]],
    request: bytes,
    timeout: float,
) -> _ChildOutcome:
    """Feed the request, collect output until the child exits or a limit is hit."""
    with _ChildPipes(*pipes, request) as channel:
        return _collect(pid, channel, timeout)


def _collect(pid: int, channel: _ChildPipes, timeout: float) -> _ChildOutcome:
    deadline = time.monotonic() + timeout
    while (returncode := _exit_status(pid)) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _ChildOutcome(
                fatal_line=f"{FATAL_PREFIX}subprocess timeout after {timeout:g}s"
            )
        channel.pump(min(remaining, EXIT_POLL_SEC))
        if channel.result_too_large():
            return _ChildOutcome(fatal_line=f"{FATAL_PREFIX}output too large")
    _kill_process_tree(pid)
    channel.drain()
    if channel.result_too_large():
        return _ChildOutcome(fatal_line=f"{FATAL_PREFIX}output too large")

    if returncode != 0:
        stderr = channel.stderr_head().rstrip()
        return _ChildOutcome(
            fatal_line=f"{FATAL_PREFIX}subprocess exit code {returncode}",
            fatal_detail=[f"STDERR: {stderr}"],
        )
    try:
        return _read_document(bytes(channel.result))
    except _ProtocolError:
        return _ChildOutcome(fatal_line=f"{FATAL_PREFIX}invalid result protocol")


class _ChildPipes:
    """Non-blocking plumbing for the child's stdin, result channel and stderr."""

    def __init__(
        self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes], request: bytes
    ) -> None:
        self.result = bytearray()
        self._stderr = bytearray()
        self._pending = memoryview(request)
        self._stdin_file = stdin
        self._stdin = stdin.fileno()
        self._stdout = stdout.fileno()
        self._stderr_fd = stderr.fileno()
        self._selector = selectors.DefaultSelector()
        for fd in (self._stdin, self._stdout, self._stderr_fd):
            os.set_blocking(fd, False)
        self._selector.register(self._stdin, selectors.EVENT_WRITE)
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr_fd, selectors.EVENT_READ)

    def __enter__(self) -> _ChildPipes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._selector.close()

    def pump(self, wait: float) -> None:
        for key, _ in self._selector.select(wait):
            if key.fd == self._stdin:
                self._feed()
            else:
                self._read(key.fd)

    def drain(self) -> None:
        """Read what is left once the child is gone; stop at EOF or an empty pipe."""
        for fd in (self._stdout, self._stderr_fd):
            while fd in self._selector.get_map() and self._read(fd):
                pass

    def result_too_large(self) -> bool:
        return len(self.result) > MAX_RESULT_BYTES

    def stderr_head(self) -> str:
        return self._stderr[:STDERR_KEPT_BYTES].decode("utf-8", errors="replace")

    def _feed(self) -> None:
        try:
            written = os.write(self._stdin, self._pending)
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(self._pending)
        self._pending = self._pending[written:]
        if not self._pending:
            self._selector.unregister(self._stdin)
            self._stdin_file.close()

    def _read(self, fd: int) -> bool:
        """Read one chunk; False when nothing more is available now."""
        try:
            chunk = os.read(fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return False
        if not chunk:
            self._selector.unregister(fd)
            return False
        if fd == self._stdout:
            self.result += chunk[: MAX_RESULT_BYTES + 1 - len(self.result)]
        elif len(self._stderr) < STDERR_KEPT_BYTES:
            self._stderr += chunk
        return True


def _exit_status(pid: int) -> int | None:
    """The child's return code once it has exited, else None.

    The child is left a zombie (WNOWAIT) so its pid and process group id cannot
    be reused before the group is killed and the child reaped.
    """
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _kill_process_tree(pid: int) -> None:
    """Kill the child's process group and every descendant of the child.

    Everything is stopped first so nothing can fork away between the look-up and
    the kill. In a PID namespace the kernel also ends every process in it once
    its first process dies. The child itself is left for the caller to reap.
    """
    _signal_group(pid, signal.SIGSTOP)
    stopped: set[psutil.Process] = set()
    while found := _descendants(pid) - stopped:
        for process in found:
            _signal_process(process, signal.SIGSTOP)
        stopped |= found
    _signal_group(pid, signal.SIGKILL)
    for process in stopped:
        _signal_process(process, signal.SIGKILL)


def _descendants(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal_process(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _read_document(raw: bytes) -> _ChildOutcome:
    """Decode and check the child's result document (module docstring of the child)."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise _ProtocolError from exc
    if not isinstance(document, dict):
        raise _ProtocolError
    network = document.get("network")
    fatal = document.get("fatal_error")
    results = document.get("results")
    if network not in ("namespace", "guard", None) or not isinstance(results, list):
        raise _ProtocolError
    if fatal is not None:
        if not isinstance(fatal, str):
            raise _ProtocolError
        return _ChildOutcome(network=network, fatal_line=FATAL_PREFIX + fatal)
    if network is None or not all(_is_result_entry(entry) for entry in results):
        raise _ProtocolError
    return _ChildOutcome(network=network, results=results)


def _is_result_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return False
    return "output" in entry or isinstance(entry.get("error"), str)


# Results --------------------------------------------------------------------


def _compare(
    scenarios: list[dict], results: list[dict[str, Any]]
) -> tuple[list[str], list[dict]]:
    """VER-4 scenario lines and VER-3 rows.

    Results pair with scenarios by position and id, so duplicate ids stay apart.
    """
    lines, rows = [], []
    for index, scenario in enumerate(scenarios):
        scenario_id = scenario["id"]
        lines.append(f"Running Scenario: {scenario.get('description') or scenario_id}")
        reported = results[index] if index < len(results) else None
        if reported is None or reported["id"] != scenario_id:
            lines.append(
                f"  [FAIL] Missing subprocess result for scenario {scenario_id}"
            )
            rows.append(_row(scenario, "fail", None))
        elif "error" in reported:
            lines.append(f"  [ERROR] Execution error: {reported['error']}")
            rows.append(_row(scenario, "fail", None))
        else:
            actual, expected = reported["output"], scenario.get("expected_output")
            if actual == expected:
                lines.append(f"  [PASS] Actual matches Expected: {_shown(actual)}")
                rows.append(_row(scenario, "pass", actual))
            else:
                lines.append(
                    f"  [FAIL] Expected {_shown(expected)}, got {_shown(actual)}"
                )
                rows.append(_row(scenario, "fail", actual))
    return lines, rows


def _result(
    started_at: str,
    clock: float,
    logs: list[str],
    rows: list[dict],
    *,
    passed: int,
    failed: int,
    fatal_error: str | None = None,
    network: str | None = None,
) -> dict:
    return {
        "timestamp": started_at,
        "total_scenarios": len(rows),
        "passed": passed,
        "failed": failed,
        "fatal": fatal_error is not None,
        "fatal_error": fatal_error,
        "network": network,
        "duration_ms": round((time.monotonic() - clock) * 1000),
        "logs": logs,
        "scenarios": rows,
    }


def _row(scenario: dict, status: str, actual: Any) -> dict:
    return {"id": scenario["id"], "status": status, "actual_output": actual}


def _normalised(scenario: dict, index: int) -> dict:
    """A scenario whose id is a string (1-based position when missing)."""
    return {**scenario, "id": str(scenario.get("id", index + 1))}


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _event_sender(
    emit: Emit | None, card_id: str | None, run_id: str | None
) -> Callable[..., None]:
    def send(event: str, level: str = "info", **data: Any) -> None:
        if emit is not None:
            payload = {"issue_id": card_id, **data}
            emit(event, payload, level=level, run_id=run_id, card_id=card_id)

    return send


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
