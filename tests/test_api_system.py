"""System routes: clear-logs, heartbeat, host metrics (API-6), calendar (API-7)."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime, timezone

import pytest

from app.api import system
from tests.api_support import add_run


def test_heartbeat_counts_running_and_queued_runs_but_not_sandbox_jobs(
    client, auth_headers, runtime_db
):
    add_run(runtime_db, "r1", status="running", builds=["b1"])
    add_run(runtime_db, "r2", status="running", type="issue", builds=["b2"])
    add_run(runtime_db, "q1", status="queued", type="rock", builds=["b3"])
    add_run(runtime_db, "d1", status="done", builds=["b4"])
    add_run(runtime_db, "h1", status="halted", builds=["b5"])
    add_run(runtime_db, "s1", status="running", type="sandbox_deploy", builds=[])
    add_run(runtime_db, "s2", status="queued", type="sandbox_stop", builds=[])

    response = client.get("/v1/system/heartbeat", headers=auth_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "online"
    assert body["active_tasks"] == 2
    assert body["queued_tasks"] == 1
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


def test_heartbeat_of_an_empty_queue(client, auth_headers):
    body = client.get("/v1/system/heartbeat", headers=auth_headers).get_json()

    assert (body["active_tasks"], body["queued_tasks"]) == (0, 0)


# Host metrics -------------------------------------------------------------------------


@pytest.fixture
def fresh_gpu_probe(monkeypatch):
    probe = system.GpuMemoryProbe()
    monkeypatch.setattr(system, "GPU_PROBE", probe)
    return probe


def test_metrics_work_without_a_login_terminal_or_gpu(
    client, auth_headers, monkeypatch, fresh_gpu_probe
):
    import getpass
    import os
    import pwd

    def no_login(*_args):
        raise OSError("no controlling terminal")

    monkeypatch.setattr(os, "getlogin", no_login)
    monkeypatch.setattr(getpass, "getuser", no_login)
    monkeypatch.setattr(
        pwd, "getpwuid", lambda _uid: (_ for _ in ()).throw(KeyError(_uid))
    )
    monkeypatch.setattr(system.shutil, "which", lambda _name: None)

    response = client.get("/v1/system/metrics", headers=auth_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "cpu_percent",
        "ram_percent",
        "vram_gb_used",
        "vram_total_gb",
        "timestamp",
        "cpu",
        "memory",
    }
    assert body["cpu"] == body["cpu_percent"] and body["memory"] == body["ram_percent"]
    assert 0.0 <= body["ram_percent"] <= 100.0
    assert (body["vram_gb_used"], body["vram_total_gb"]) == (0.0, 0.0)


def test_gpu_memory_is_summed_and_cached_for_ten_seconds(monkeypatch, fresh_gpu_probe):
    calls = []

    def fake_run(args, **kwargs):
        calls.append((args, kwargs["timeout"]))
        return subprocess.CompletedProcess(
            args, 0, stdout="1024, 8192\n512, 8192\n", stderr=""
        )

    clock = [100.0]
    monkeypatch.setattr(system.shutil, "which", lambda _name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(system.subprocess, "run", fake_run)
    monkeypatch.setattr(system.time, "monotonic", lambda: clock[0])

    first = fresh_gpu_probe.used_and_total_gb()
    clock[0] += 9.9
    second = fresh_gpu_probe.used_and_total_gb()
    clock[0] += 0.2
    third = fresh_gpu_probe.used_and_total_gb()

    assert first == second == third == (1.5, 16.0)
    assert len(calls) == 2
    assert calls[0][1] == 2.0


def test_a_hanging_nvidia_smi_reads_as_zero(monkeypatch, fresh_gpu_probe):
    def hang(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(system.shutil, "which", lambda _name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(system.subprocess, "run", hang)

    assert fresh_gpu_probe.used_and_total_gb() == (0.0, 0.0)


# Calendar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "today, sprint, start, end",
    [
        (date(2026, 2, 6), "Q1 S6", "2026-02-02", "2026-02-06"),
        (date(2026, 2, 9), "Q1 S7", "2026-02-09", "2026-02-13"),
        (date(2026, 5, 4), "Q2 S6", "2026-05-04", "2026-05-08"),
        (date(2027, 3, 1), "Q1 S10", "2027-03-01", "2027-03-05"),
        (date(2026, 1, 1), "Q1 S1", "2025-12-29", "2026-01-02"),
        # The thirteenth sprint of a quarter is followed by the first of the next.
        (date(2026, 3, 27), "Q1 S13", "2026-03-23", "2026-03-27"),
        (date(2026, 3, 30), "Q2 S1", "2026-03-30", "2026-04-03"),
        # A Sunday: the week's Monday, and Friday as now + (4 - weekday) days.
        (date(2026, 2, 8), "Q1 S6", "2026-02-02", "2026-02-06"),
    ],
)
def test_calendar_examples(
    client, auth_headers, monkeypatch, today, sprint, start, end
):
    moment = datetime(today.year, today.month, today.day, 12, tzinfo=timezone.utc)
    monkeypatch.setattr(system, "utcnow", lambda: moment)

    response = client.get("/v1/system/calendar", headers=auth_headers)

    assert response.status_code == 200
    assert response.get_json() == {
        "current_sprint": sprint,
        "sprint_start": start,
        "sprint_end": end,
    }


# Logs and version ---------------------------------------------------------------------


def test_clear_logs_truncates_the_file_then_records_it(
    client, auth_headers, app, settings
):
    app.extensions["orket"].events.emit("run_queued", {"run_id": "x"})
    assert "run_queued" in settings.log_file.read_text()

    response = client.post("/v1/system/clear-logs", headers=auth_headers)

    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    lines = settings.log_file.read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["logs_cleared"]


def test_clear_logs_failure_is_a_plain_500(client, auth_headers, app, monkeypatch):
    def fail() -> None:
        raise PermissionError(13, "Permission denied", "/secret/path/orket.log")

    monkeypatch.setattr(app.extensions["orket"].events, "clear_log_file", fail)

    response = client.post("/v1/system/clear-logs", headers=auth_headers)

    assert response.status_code == 500
    assert response.get_json() == {"detail": "Could not clear logs"}


def test_version(client, auth_headers):
    body = client.get("/v1/version", headers=auth_headers).get_json()

    assert body["api"] == "v1" and body["version"]
