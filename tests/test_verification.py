"""The fixture verification runner (SPEC §8, SEC-5): real child processes, no mocks."""

from __future__ import annotations

import json
import shutil
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import app
from app.config import Settings
from app.verification import NO_FIXTURE_LINE, run_verification

DEMO_FIXTURE = (
    Path(app.__file__).parent / "assets" / "verification" / "demo" / "calc_fixture.py"
)
STARTED_LINE = "--- Verification Started at "


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data" / "verification").mkdir(parents=True)
    return tmp_path / "data"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "verify_timeout_sec": 10,
            "verify_cpu_sec": 5,
            "verify_mem_mb": 256,
            "verify_max_procs": 16,
            "verify_network": "auto",
        }
        return Settings(**{**values, **overrides})

    return build


@pytest.fixture
def write_fixture(data_dir: Path) -> Callable[[str, str], str]:
    """Write a fixture under the verification root; returns its data-relative path."""

    def write(name: str, source: str) -> str:
        path = data_dir / "verification" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return f"verification/{name}"

    return write


class EventLog:
    """Collects emit() calls the way the event module receives them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, dict]] = []

    def __call__(self, event: str, data: dict, **options: Any) -> None:
        self.calls.append((event, data, options))

    @property
    def names(self) -> list[str]:
        return [event for event, _, _ in self.calls]

    def data(self, name: str) -> dict:
        return next(data for event, data, _ in self.calls if event == name)


def scenario(scenario_id: str, expected: Any = None, **input_data: Any) -> dict:
    return {"id": scenario_id, "input_data": input_data, "expected_output": expected}


def assert_fatal(result: dict, line: str) -> None:
    assert result["fatal"] is True
    assert result["fatal_error"] == line
    assert result["logs"][1] == line
    assert result["passed"] == 0
    assert result["failed"] == result["total_scenarios"]
    assert all(row["status"] == "fail" for row in result["scenarios"])
    assert (
        result["logs"][-1]
        == f"--- Verification Complete: 0 Passed, {result['failed']} Failed ---"
    )


ADDER = """
    def verify(input_data):
        return input_data["a"] + input_data["b"]
"""


# Outcomes of single scenarios ------------------------------------------------


def test_passing_scenario_counts_and_result_shape(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture("adder.py", ADDER)

    result = run_verification(
        make_settings(), fixture, [scenario("S1", 5, a=2, b=3)], workspace
    )

    assert (
        result["passed"] == 1
        and result["failed"] == 0
        and result["total_scenarios"] == 1
    )
    assert result["fatal"] is False and result["fatal_error"] is None
    assert result["network"] in ("namespace", "guard")
    assert result["scenarios"] == [{"id": "S1", "status": "pass", "actual_output": 5}]
    assert result["logs"][0] == f"{STARTED_LINE}{result['timestamp']} ---"
    assert result["timestamp"].endswith("+00:00") and "." in result["timestamp"]
    assert isinstance(result["duration_ms"], int) and result["duration_ms"] >= 0


def test_log_lines_for_pass_fail_error_and_missing_function(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "mixed.py",
        """
        def verify(input_data):
            if input_data.get("explode"):
                raise ValueError("boom")
            return {"sum": input_data["a"] + input_data["b"]}

        def verify_S4(input_data):
            return "per-id wins"

        verify_S5 = None
        """,
    )
    scenarios = [
        {**scenario("S1", {"sum": 3}, a=1, b=2), "description": "one plus two"},
        scenario("S2", {"sum": 9}, a=1, b=2),
        scenario("S3", 0, explode=True),
        scenario("S4", "per-id wins"),
        scenario("S5", {"sum": 2}, a=1, b=1),
    ]

    result = run_verification(make_settings(), fixture, scenarios, workspace)

    assert result["logs"][1:] == [
        "Running Scenario: one plus two",
        '  [PASS] Actual matches Expected: {"sum": 3}',
        "Running Scenario: S2",
        '  [FAIL] Expected {"sum": 9}, got {"sum": 3}',
        "Running Scenario: S3",
        "  [ERROR] Execution error: ValueError: boom",
        "Running Scenario: S4",
        '  [PASS] Actual matches Expected: "per-id wins"',
        "Running Scenario: S5",
        '  [PASS] Actual matches Expected: {"sum": 2}',
        "--- Verification Complete: 3 Passed, 2 Failed ---",
    ]
    assert [row["status"] for row in result["scenarios"]] == [
        "pass",
        "fail",
        "fail",
        "pass",
        "pass",
    ]
    assert result["scenarios"][1]["actual_output"] == {"sum": 3}
    assert result["scenarios"][2]["actual_output"] is None


def test_scenario_without_any_verify_function(make_settings, write_fixture, workspace):
    fixture = write_fixture("only_s1.py", "def verify_S1(input_data):\n    return 1\n")

    result = run_verification(
        make_settings(), fixture, [scenario("S1", 1), scenario("S2", 1)], workspace
    )

    assert (
        result["logs"][4]
        == "  [ERROR] Execution error: No verify function found for scenario S2"
    )
    assert result["passed"] == 1 and result["failed"] == 1


@pytest.mark.parametrize("value", ["object()", "float('nan')", "{1, 2}"])
def test_non_json_return_is_an_execution_error(
    make_settings, write_fixture, workspace, value
):
    fixture = write_fixture("odd.py", f"def verify(input_data):\n    return {value}\n")

    result = run_verification(
        make_settings(), fixture, [scenario("S1", None)], workspace
    )

    assert (
        result["logs"][2] == "  [ERROR] Execution error: result not JSON serializable"
    )
    assert result["fatal"] is False and result["failed"] == 1


def test_output_is_compared_after_a_json_round_trip(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture("tuple.py", "def verify(input_data):\n    return (1, 2)\n")

    result = run_verification(
        make_settings(), fixture, [scenario("S1", [1, 2])], workspace
    )

    assert result["passed"] == 1


def test_print_to_stdout_is_harmless(make_settings, write_fixture, workspace):
    fixture = write_fixture(
        "chatty.py",
        """
        import sys
        print('{"network": "guard", "fatal_error": null, "results": []}')

        def verify(input_data):
            print("x" * (4 * 1024 * 1024))
            sys.stdout.flush()
            return 5
        """,
    )

    result = run_verification(make_settings(), fixture, [scenario("S1", 5)], workspace)

    assert result["passed"] == 1 and result["fatal"] is False


def test_memory_limit_turns_a_huge_allocation_into_an_error(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "hungry.py",
        """
        def verify_big(input_data):
            return len(bytearray(4 * 1024 ** 3))

        def verify_small(input_data):
            return len(bytearray(1024))
        """,
    )

    result = run_verification(
        make_settings(verify_mem_mb=256),
        fixture,
        [scenario("big", 0), scenario("small", 1024)],
        workspace,
    )

    assert result["logs"][2] == "  [ERROR] Execution error: MemoryError: "
    assert [row["status"] for row in result["scenarios"]] == ["fail", "pass"]


# Fatal outcomes -----------------------------------------------------------------


def test_timeout_fails_every_scenario_and_stops_promptly(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "spin.py", "def verify(input_data):\n    while True:\n        pass\n"
    )
    settings = make_settings(verify_timeout_sec=1, verify_cpu_sec=60)

    began = time.monotonic()
    result = run_verification(
        settings, fixture, [scenario("S1", 1), scenario("S2", 2)], workspace
    )
    overshoot = time.monotonic() - began - 1

    assert_fatal(result, "FATAL ERROR loading fixture: subprocess timeout after 1s")
    assert result["failed"] == 2 and result["network"] is None
    assert overshoot < 2.0


def test_cpu_limit_ends_a_busy_fixture_before_the_timeout(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "burn.py", "def verify(input_data):\n    while True:\n        pass\n"
    )
    settings = make_settings(verify_timeout_sec=30, verify_cpu_sec=1)

    result = run_verification(settings, fixture, [scenario("S1", 1)], workspace)

    assert_fatal(result, "FATAL ERROR loading fixture: subprocess exit code -9")
    assert result["logs"][2] == "STDERR: CPU time limit of 1s exceeded"
    assert result["duration_ms"] < 15_000


def test_exit_code_is_fatal_with_the_start_of_stderr(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "quits.py",
        """
        import sys
        sys.stderr.write("leaving now\\n" + "e" * 5000)
        sys.exit(3)
        """,
    )

    result = run_verification(make_settings(), fixture, [scenario("S1", 1)], workspace)

    assert_fatal(result, "FATAL ERROR loading fixture: subprocess exit code 3")
    assert result["logs"][2] == "STDERR: leaving now\n" + "e" * (
        2048 - len("leaving now\n")
    )


def test_import_error_is_fatal_with_type_and_message(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture("broken.py", "import orket_no_such_module\n")

    result = run_verification(make_settings(), fixture, [scenario("S1", 1)], workspace)

    assert_fatal(
        result,
        "FATAL ERROR loading fixture: ModuleNotFoundError: "
        "No module named 'orket_no_such_module'",
    )
    assert result["network"] in ("namespace", "guard")


def test_result_over_256_kib_is_fatal(make_settings, write_fixture, workspace):
    fixture = write_fixture(
        "big.py", "def verify(input_data):\n    return 'x' * 300_000\n"
    )

    result = run_verification(
        make_settings(), fixture, [scenario("S1", "x")], workspace
    )

    assert_fatal(result, "FATAL ERROR loading fixture: output too large")


def test_result_just_under_256_kib_is_accepted(make_settings, write_fixture, workspace):
    fixture = write_fixture(
        "large.py", "def verify(input_data):\n    return 'x' * 250_000\n"
    )

    result = run_verification(
        make_settings(), fixture, [scenario("S1", "x" * 250_000)], workspace
    )

    assert result["passed"] == 1


def test_exiting_without_a_result_is_an_invalid_protocol(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture("silent.py", "import os\nos._exit(0)\n")

    result = run_verification(make_settings(), fixture, [scenario("S1", 1)], workspace)

    assert_fatal(result, "FATAL ERROR loading fixture: invalid result protocol")


def test_result_without_a_scenario_is_reported_missing(
    make_settings, write_fixture, workspace
):
    fixture = write_fixture(
        "forger.py",
        """
        import json
        import os
        import stat

        # The private result channel is the only pipe besides stdin/stdout/stderr.
        def is_pipe(fd):
            if not os.path.exists(f"/proc/self/fd/{fd}"):
                return False
            return stat.S_ISFIFO(os.fstat(fd).st_mode)

        channel = next(fd for fd in range(3, 64) if is_pipe(fd))
        document = {"network": "guard", "fatal_error": None, "results": []}
        os.write(channel, json.dumps(document).encode())
        os._exit(0)
        """,
    )

    result = run_verification(make_settings(), fixture, [scenario("S1", 1)], workspace)

    assert result["fatal"] is False
    assert result["logs"][2] == "  [FAIL] Missing subprocess result for scenario S1"
    assert result["failed"] == 1


def test_missing_fixture_file_is_fatal(make_settings, workspace):
    events = EventLog()

    result = run_verification(
        make_settings(),
        "verification/nope.py",
        [scenario("S1", 1)],
        workspace,
        emit=events,
        card_id="C-1",
    )

    assert_fatal(result, "ERROR: Fixture file not found at verification/nope.py")
    assert events.data("verification_fatal") == {
        "issue_id": "C-1",
        "message": "ERROR: Fixture file not found at verification/nope.py",
    }


@pytest.mark.parametrize("fixture_path", [None, ""])
def test_no_fixture_skips_empirical_tests(make_settings, workspace, fixture_path):
    events = EventLog()

    result = run_verification(
        make_settings(), fixture_path, [scenario("S1", 1)], workspace, emit=events
    )

    assert result["logs"] == [NO_FIXTURE_LINE]
    assert (result["passed"], result["failed"], result["fatal"]) == (0, 0, False)
    assert events.calls == []


# Paths (VER-1) ----------------------------------------------------------------


@pytest.fixture
def outside_fixture(data_dir: Path, tmp_path: Path) -> Path:
    """A fixture outside the root that leaves a mark if it is ever imported."""
    path = data_dir / "outside.py"
    path.write_text(
        f"from pathlib import Path\nPath({str(tmp_path / 'escaped')!r}).touch()\n"
        "def verify(input_data):\n    return 1\n"
    )
    return path


@pytest.mark.parametrize(
    "given",
    [
        "verification/../outside.py",
        "../outside.py",
        "ABSOLUTE",
        "verification/link.py",
        "link.py",
    ],
)
def test_fixture_paths_escaping_the_root_are_refused(
    make_settings, data_dir, workspace, tmp_path, outside_fixture, given
):
    (data_dir / "verification" / "link.py").symlink_to(outside_fixture)
    if given == "ABSOLUTE":
        given = str(outside_fixture)
    events = EventLog()

    result = run_verification(
        make_settings(), given, [scenario("S1", 1)], workspace, emit=events
    )

    line = (
        f"SECURITY VIOLATION: Fixture path '{given}' is outside the verification "
        "directory 'verification/'."
    )
    assert_fatal(result, line)
    assert events.names == [
        "verification_started",
        "verification_security_violation",
        "verification_completed",
    ]
    assert events.data("verification_security_violation")["fixture_path"] == given
    assert not (tmp_path / "escaped").exists()


def test_path_without_prefix_is_relative_to_the_root(
    make_settings, write_fixture, workspace
):
    write_fixture("nested/adder.py", ADDER)

    result = run_verification(
        make_settings(), "nested/adder.py", [scenario("S1", 3, a=1, b=2)], workspace
    )

    assert result["passed"] == 1


def test_symlink_inside_the_root_is_allowed(
    make_settings, write_fixture, data_dir, workspace
):
    write_fixture("real.py", ADDER)
    (data_dir / "verification" / "alias.py").symlink_to(
        data_dir / "verification" / "real.py"
    )

    result = run_verification(
        make_settings(),
        "verification/alias.py",
        [scenario("S1", 3, a=1, b=2)],
        workspace,
    )

    assert result["passed"] == 1


# Isolation (VER-2, SEC-5) --------------------------------------------------------


def test_fixture_sees_only_the_clean_environment(
    make_settings, write_fixture, data_dir, workspace, monkeypatch
):
    monkeypatch.setenv("ORKET_API_KEY", "super-secret-value")
    monkeypatch.setenv("GITEA_TOKEN", "another-secret-value")
    fixture = write_fixture(
        "env.py",
        """
        import os

        def verify(input_data):
            return {
                "keys": sorted(os.environ),
                "lang": os.environ["LANG"],
                "home_is_tmp": os.environ["HOME"] == os.environ["TMPDIR"],
                "home_exists": os.path.isdir(os.environ["HOME"]),
                "workspace": os.environ["ORKET_WORKSPACE"],
                "cwd": os.getcwd(),
            }
        """,
    )

    result = run_verification(make_settings(), fixture, [scenario("S1")], workspace)

    seen = result["scenarios"][0]["actual_output"]
    assert seen == {
        "keys": ["HOME", "LANG", "ORKET_WORKSPACE", "PATH", "TMPDIR"],
        "lang": "C.UTF-8",
        "home_is_tmp": True,
        "home_exists": True,
        "workspace": str(workspace.resolve()),
        "cwd": str((data_dir / "verification").resolve()),
    }
    assert "secret" not in json.dumps(result)


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback server the fixture must not be able to reach."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


NETWORK_PROBE = """
    import socket

    def attempt(action):
        try:
            action()
        except OSError as exc:
            return type(exc).__name__
        return "connected"

    def verify(input_data):
        address = ("127.0.0.1", input_data["port"])
        import _socket
        return [
            attempt(lambda: socket.create_connection(address, timeout=2).close()),
            attempt(lambda: socket.socket().connect(address)),
            attempt(lambda: _socket.socket().connect(address)),
        ]
"""


@pytest.mark.parametrize("mode", ["auto", "guard"])
def test_network_to_loopback_is_blocked_and_mode_reported(
    make_settings, write_fixture, workspace, listener, mode
):
    fixture = write_fixture("net.py", NETWORK_PROBE)

    result = run_verification(
        make_settings(verify_network=mode),
        fixture,
        [scenario("S1", port=listener)],
        workspace,
    )

    outcomes = result["scenarios"][0]["actual_output"]
    assert len(outcomes) == 3 and "connected" not in outcomes
    if mode == "guard":
        assert result["network"] == "guard"
        assert outcomes == ["PermissionError"] * 3
    else:
        assert result["network"] in ("namespace", "guard")


def test_namespace_mode_isolates_or_fails_closed(
    make_settings, write_fixture, workspace, listener
):
    fixture = write_fixture("net.py", NETWORK_PROBE)

    result = run_verification(
        make_settings(verify_network="namespace"),
        fixture,
        [scenario("S1", port=listener)],
        workspace,
    )

    if result["fatal"]:
        assert result["fatal_error"].startswith(
            "FATAL ERROR loading fixture: OSError: network namespace unavailable"
        )
    else:
        assert result["network"] == "namespace"
        assert "connected" not in result["scenarios"][0]["actual_output"]


ORPHAN_MAKER = """
    import os
    import sys
    import time
    from pathlib import Path

    SLEEPER = (
        "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )

    def verify(input_data):
        marker = Path(os.environ["ORKET_WORKSPACE"]) / "orphan-started"
        child = os.fork()
        if child == 0:
            os.setsid()
            if os.fork() == 0:
                argv = ["-c", SLEEPER, str(marker), input_data["token"]]
                os.execv(sys.executable, [sys.executable, *argv])
            os._exit(0)
        os.waitpid(child, 0)
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        while input_data["hang"]:
            time.sleep(0.1)
        return "spawned"
"""


def processes_with(token: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and token in (
            process.info["cmdline"] or []
        ):
            found.append(process)
    return found


@pytest.mark.parametrize("mode", ["auto", "guard"])
@pytest.mark.parametrize("hang", [False, True])
def test_no_descendant_outlives_the_result(
    make_settings, write_fixture, workspace, mode, hang
):
    fixture = write_fixture("orphans.py", ORPHAN_MAKER)
    token = f"orket-orphan-{uuid.uuid4().hex}"
    settings = make_settings(verify_network=mode, verify_timeout_sec=3)

    result = run_verification(
        settings,
        fixture,
        [scenario("S1", "spawned", token=token, hang=hang)],
        workspace,
    )

    assert (workspace / "orphan-started").exists()
    assert result["fatal"] is hang
    assert processes_with(token) == []


def test_at_most_four_fixture_processes_run_at_once(
    make_settings, write_fixture, workspace
):
    (workspace / "active").mkdir()
    fixture = write_fixture(
        "slow.py",
        """
        import os
        import time
        from pathlib import Path

        def verify(input_data):
            active = Path(os.environ["ORKET_WORKSPACE"]) / "active"
            mine = active / input_data["name"]
            mine.touch()
            time.sleep(0.6)
            seen = len(list(active.iterdir()))
            mine.unlink()
            return seen
        """,
    )
    settings = make_settings()
    seen: list[int] = []

    def run_one(index: int) -> None:
        result = run_verification(
            settings, fixture, [scenario("S1", name=f"run-{index}")], workspace
        )
        seen.append(result["scenarios"][0]["actual_output"])

    threads = [threading.Thread(target=run_one, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(seen) == 6
    assert max(seen) <= 4


# Events and the demo fixture ------------------------------------------------------


def test_events_for_a_normal_run(make_settings, write_fixture, workspace):
    fixture = write_fixture("adder.py", ADDER)
    events = EventLog()

    result = run_verification(
        make_settings(),
        fixture,
        [scenario("S1", 3, a=1, b=2), scenario("S2", 4, a=1, b=2)],
        workspace,
        emit=events,
        card_id="DEMO-1",
        run_id="abcd1234",
    )

    assert events.names == ["verification_started", "verification_completed"]
    assert events.data("verification_started") == {"issue_id": "DEMO-1"}
    assert events.data("verification_completed") == {
        "issue_id": "DEMO-1",
        "passed": 1,
        "failed": 1,
        "total": 2,
        "fatal": False,
        "network": result["network"],
    }
    assert all(
        options["run_id"] == "abcd1234" and options["card_id"] == "DEMO-1"
        for _, _, options in events.calls
    )


def test_fatal_event_carries_the_grepable_line(make_settings, write_fixture, workspace):
    fixture = write_fixture("broken.py", "raise RuntimeError('cannot start')\n")
    events = EventLog()

    result = run_verification(
        make_settings(),
        fixture,
        [scenario("S1", 1)],
        workspace,
        emit=events,
        card_id="C-9",
    )

    assert events.names == [
        "verification_started",
        "verification_fatal",
        "verification_completed",
    ]
    fatal_event = events.calls[1]
    assert (
        fatal_event[1]["message"]
        == "FATAL ERROR loading fixture: RuntimeError: cannot start"
    )
    assert fatal_event[1]["message"] in result["logs"]
    assert fatal_event[2]["level"] == "error"
    assert events.data("verification_completed")["fatal"] is True


@pytest.fixture
def demo_fixture_installed(data_dir: Path) -> str:
    target = data_dir / "verification" / "demo" / "calc_fixture.py"
    target.parent.mkdir(parents=True)
    shutil.copyfile(DEMO_FIXTURE, target)
    return "verification/demo/calc_fixture.py"


DEMO_SCENARIO = {
    "id": "S1",
    "description": "2 + 3",
    "input_data": {"a": 2, "b": 3},
    "expected_output": 5,
}


@pytest.mark.parametrize(
    ("calc_source", "expected_line"),
    [
        ("def add(a, b):\n    return a + b\n", "  [PASS] Actual matches Expected: 5"),
        ("def add(a, b):\n    return a - b\n", "  [FAIL] Expected 5, got -1"),
        (
            None,
            "  [ERROR] Execution error: FileNotFoundError: "
            "agent_output/calc.py not found in the workspace",
        ),
    ],
)
def test_demo_fixture_checks_calc_in_the_workspace(
    make_settings, demo_fixture_installed, workspace, calc_source, expected_line
):
    if calc_source is not None:
        (workspace / "agent_output").mkdir()
        (workspace / "agent_output" / "calc.py").write_text(calc_source)

    result = run_verification(
        make_settings(), demo_fixture_installed, [DEMO_SCENARIO], workspace
    )

    assert result["logs"][1:3] == ["Running Scenario: 2 + 3", expected_line]
