"""Fixture process of the verification runner (SPEC VER-2).

Started by `app.verification` as `python -I verification_child.py`, so it sees
neither the `app` package nor the caller's environment: standard library only.

Protocol. stdin carries one JSON request::

    {"fixture_path": "<absolute path>", "scenarios": [{"id", "input_data"}],
     "cpu_sec": 2, "mem_mb": 256, "max_procs": 16, "network": "auto"}

The original stdout is kept as the private result channel and fd 1 is pointed at
stderr, so whatever a fixture prints cannot corrupt the result. The result is one
JSON document on that channel::

    {"network": "namespace" | "guard" | null, "fatal_error": "<cause>" | null,
     "results": [{"id", "output"} | {"id", "error"}]}

Process layout. This supervisor isolates the network, then forks one fixture
process. Where the kernel allows, that process is the first of a new PID
namespace, so the kernel ends every descendant when it ends. The supervisor is
also a child subreaper, so orphans left by the fixture come back to it and are
killed before it exits with the fixture process's status.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
MIB = 1024 * 1024
NETWORK_REFUSAL = "network access is disabled during verification"


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    result_fd = os.dup(1)
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    try:
        network = isolate_network(request["network"])
    except OSError as exc:
        cause = f"OSError: network namespace unavailable: {exc}"
        write_document(
            result_fd, {"network": None, "fatal_error": cause, "results": []}
        )
        return

    enter_pid_namespace()
    become_subreaper()
    pid = os.fork()
    if pid == 0:
        run_fixture_process(request, network, result_fd)
    os.close(result_fd)
    _, status, usage = os.wait4(pid, 0)
    end_leftover_descendants()
    finish_like(status, usage.ru_utime + usage.ru_stime, request["cpu_sec"])


# Isolation ------------------------------------------------------------------


def isolate_network(mode: str) -> str:
    """Enter user + network namespaces, or fall back to the socket guard.

    Returns the mode in force. Raises OSError when `mode` is "namespace" and the
    kernel refuses.
    """
    if mode == "guard":
        return "guard"
    try:
        enter_network_namespace()
    except OSError:
        if mode == "namespace":
            raise
        return "guard"
    return "namespace"


def enter_network_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    unshare(CLONE_NEWUSER | CLONE_NEWNET)
    # Map our own ids so files created by the fixture keep a valid owner.
    write_proc_file("/proc/self/setgroups", "deny")
    write_proc_file("/proc/self/uid_map", f"{uid} {uid} 1")
    write_proc_file("/proc/self/gid_map", f"{gid} {gid} 1")


def enter_pid_namespace() -> None:
    """Best effort: without it the subreaper cleanup still ends leftovers."""
    try:
        unshare(CLONE_NEWPID)
    except OSError:
        pass


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def write_proc_file(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def install_network_guard() -> None:
    """Make every Python-level way to reach the network raise.

    Not a boundary against hostile code (ctypes can still issue raw syscalls);
    the namespace is. This keeps honest fixtures and agent code offline.
    """
    import _socket
    import socket

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(13, NETWORK_REFUSAL)

    blocked_methods = ("connect", "connect_ex", "sendto", "sendmsg")
    guarded_type = type("GuardedSocket", (_socket.socket,), {})
    for name in blocked_methods:
        setattr(socket.socket, name, refuse)
        setattr(guarded_type, name, refuse)
    for name in ("socket", "SocketType"):
        setattr(_socket, name, guarded_type)
    resolvers = (
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
    )
    for name in resolvers:
        setattr(_socket, name, refuse)
        setattr(socket, name, refuse)
    socket.create_connection = refuse


def apply_limits(request: dict[str, Any]) -> None:
    set_limit(resource.RLIMIT_CPU, int(request["cpu_sec"]))
    set_limit(resource.RLIMIT_AS, int(request["mem_mb"]) * MIB)
    set_limit(resource.RLIMIT_NPROC, int(request["max_procs"]))


def set_limit(which: int, value: int) -> None:
    """Set soft and hard limit; equal values make RLIMIT_CPU end in SIGKILL."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


# The fixture process ----------------------------------------------------------


def run_fixture_process(
    request: dict[str, Any], network: str, result_fd: int
) -> NoReturn:
    """Limit, guard, load the fixture, run the scenarios, write the result, exit."""
    code = 1
    try:
        apply_limits(request)
        if network == "guard":
            install_network_guard()
        outcome = run_fixture(request["fixture_path"], request["scenarios"])
        write_document(result_fd, {"network": network, **outcome})
        code = 0
    except SystemExit as exc:
        code = exit_code_of(exc)
    except BaseException:  # a forked child must never unwind into the supervisor
        traceback.print_exc()
    finally:
        flush_standard_streams()
        os._exit(code)


def run_fixture(fixture_path: str, scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        module = load_fixture(Path(fixture_path))
    except Exception as exc:  # any import failure is the VER-4 `<Type>: <msg>` cause
        return {"fatal_error": describe(exc), "results": []}
    return {
        "fatal_error": None,
        "results": [run_scenario(module, s) for s in scenarios],
    }


def load_fixture(path: Path) -> Any:
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("orket_fixture", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load fixture {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_scenario(module: Any, scenario: dict[str, Any]) -> dict[str, Any]:
    """Call `verify_<id>` (or else `verify`) and report its output or error."""
    scenario_id = scenario["id"]
    check = find_check(module, scenario_id)
    if check is None:
        return {
            "id": scenario_id,
            "error": f"No verify function found for scenario {scenario_id}",
        }
    try:
        output = check(scenario.get("input_data"))
    except Exception as exc:  # every scenario failure is reported, never raised (VER-2)
        return {"id": scenario_id, "error": describe(exc)}
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return {"id": scenario_id, "error": "result not JSON serializable"}
    return {"id": scenario_id, "output": output}


def find_check(module: Any, scenario_id: str) -> Any:
    for name in (f"verify_{scenario_id}", "verify"):
        candidate = getattr(module, name, None)
        if callable(candidate):
            return candidate
    return None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def write_document(fd: int, document: dict[str, Any]) -> None:
    data = memoryview(json.dumps(document, allow_nan=False).encode("utf-8"))
    while data:
        data = data[os.write(fd, data) :]
    os.close(fd)


def exit_code_of(exc: SystemExit) -> int:
    """The status Python itself would exit with for this SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the fixture or the reader is gone
            pass


# Supervisor after the fixture process ------------------------------------------


def end_leftover_descendants() -> None:
    """Kill and reap every process still below us (orphans are reparented here)."""
    while children := children_of(os.getpid()):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def children_of(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry))
    return children


def finish_like(status: int, cpu_used: float, cpu_limit: int) -> NoReturn:
    """Exit with the fixture process's status, so the caller sees its code or signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGKILL, signal.SIGXCPU) and cpu_used >= cpu_limit * 0.95:
            print(f"CPU time limit of {cpu_limit}s exceeded", file=sys.stderr)
        flush_standard_streams()
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    flush_standard_streams()
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
