"""System routes: clear-logs, heartbeat, host metrics (API-6), calendar (API-7)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

import psutil
from flask import Response, jsonify
from sqlalchemy import func, select

from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.db import Database
from app.engine.sprint import calendar as sprint_calendar
from app.models.base import isoformat, utcnow
from app.models.runtime import RUN_TYPES, Session
from app.services import current_services

log = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_SEC = 2.0
GPU_CACHE_SEC = 10.0
MIB_PER_GB = 1024.0


@route(
    v1,
    "/system/clear-logs",
    "POST",
    "Truncate the shared log file",
    response=schemas.OkOut,
    errors=(500,),
)
def clear_logs() -> Response:
    events = current_services().events
    try:
        events.clear_log_file()
    except OSError as exc:
        log.warning(
            "clearing the log file failed: %s", exc.strerror or type(exc).__name__
        )
        raise ApiError(500, "Could not clear logs") from None

    events.emit("logs_cleared", {})
    return jsonify({"ok": True})


@route(
    v1,
    "/system/heartbeat",
    "GET",
    "Liveness with the number of running and queued runs",
    response=schemas.HeartbeatOut,
)
def heartbeat() -> Response:
    counts = active_run_counts(current_services().runtime_db)
    return jsonify(
        {
            "status": "online",
            "timestamp": isoformat(utcnow()),
            "active_tasks": counts.get("running", 0),
            "queued_tasks": counts.get("queued", 0),
        }
    )


def active_run_counts(db: Database) -> dict[str, int]:
    """`sessions` rows of run types (not sandbox jobs) that are running or queued."""
    statement = (
        select(Session.status, func.count())
        .where(Session.type.in_(RUN_TYPES))
        .where(Session.status.in_(("running", "queued")))
        .group_by(Session.status)
    )
    with db.reader() as session:
        return {status: count for status, count in session.execute(statement)}


# Host metrics -------------------------------------------------------------------------


class GpuMemoryProbe:
    """GPU memory from `nvidia-smi`, asked at most every GPU_CACHE_SEC seconds.

    Without the tool, or when it fails or hangs past its timeout, both values are
    0.0. The lock makes concurrent requests share one call instead of each
    starting their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = (0.0, 0.0)
        self._read_at: float | None = None

    def used_and_total_gb(self) -> tuple[float, float]:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= GPU_CACHE_SEC:
                self._value = self._query()
                self._read_at = time.monotonic()
            return self._value

    def _query(self) -> tuple[float, float]:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            return 0.0, 0.0
        try:
            completed = subprocess.run(
                [
                    binary,
                    "--query-gpu=memory.used,memory.total",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_SEC,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return 0.0, 0.0
        return _sum_gpu_lines(completed.stdout)


def _sum_gpu_lines(output: str) -> tuple[float, float]:
    """Totals of `used, total` MiB lines, in GB; unreadable lines are skipped."""
    used = total = 0.0
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            continue
        try:
            used += float(fields[0])
            total += float(fields[1])
        except ValueError:
            continue
    return round(used / MIB_PER_GB, 2), round(total / MIB_PER_GB, 2)


GPU_PROBE = GpuMemoryProbe()


@route(
    v1,
    "/system/metrics",
    "GET",
    "CPU, memory and GPU memory of the host",
    response=schemas.SystemMetricsOut,
)
def system_metrics() -> Response:
    # interval=None compares with the previous call instead of sleeping.
    cpu = float(psutil.cpu_percent(interval=None))
    memory = float(psutil.virtual_memory().percent)
    vram_used, vram_total = GPU_PROBE.used_and_total_gb()
    return jsonify(
        {
            "cpu_percent": cpu,
            "ram_percent": memory,
            "vram_gb_used": vram_used,
            "vram_total_gb": vram_total,
            "timestamp": isoformat(utcnow()),
            "cpu": cpu,
            "memory": memory,
        }
    )


@route(
    v1,
    "/system/calendar",
    "GET",
    "The current sprint and this week's Monday and Friday",
    response=schemas.CalendarOut,
)
def calendar() -> Response:
    return jsonify(sprint_calendar(utcnow()))
