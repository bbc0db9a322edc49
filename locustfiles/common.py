"""What every load scenario shares: targets, credentials, quotas and exact timings.

The harness runs each scenario as its own Locust process and passes the target URLs
(`API_URL`, `WEBHOOK_URL`, `WS_URL`) and the request quota (`ORKET_LOAD_TOTAL`) in
the environment; key, secret and test token come from the settings (environment,
then `.env`), like the servers'. Every finished request is also recorded with its
exact duration and written to `ORKET_LOAD_SAMPLES` when Locust quits, because
Locust's own statistics round response times into buckets.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from app.config import Settings, load_settings
from locustfiles.targets import target_urls

DEMO_EPIC_PATH = "model/core/epics/demo.json"


def settings() -> Settings:
    return load_settings()


def default_urls(current: Settings) -> dict[str, str]:
    return target_urls(current, os.environ)


def run_stamp() -> str:
    """Identifies this run in build ids and repository names; set by the harness."""
    return os.environ.get("ORKET_LOAD_STAMP") or time.strftime(
        "%Y%m%dT%H%M%SZ", time.gmtime()
    )


class Quota:
    """Hands out at most `total` request tickets and quits Locust after the last one.

    Without a total (the web UI) tickets never run out. Locust runs its users as
    greenlets in one thread, so plain counters are safe.
    """

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.issued = 0
        self.finished = 0

    @classmethod
    def from_environment(cls) -> Quota:
        raw = os.environ.get("ORKET_LOAD_TOTAL", "").strip()
        return cls(int(raw) if raw else None)

    def take(self) -> int | None:
        """The next ticket number (0-based), or None when the quota is spent."""
        if self.total is not None and self.issued >= self.total:
            return None
        self.issued += 1
        return self.issued - 1

    def finish(self, environment: Environment) -> None:
        self.finished += 1
        if self.total is not None and self.finished >= self.total:
            runner = environment.runner
            if runner is not None:
                # Quit from a fresh greenlet: quitting stops every user, this one too.
                gevent.spawn(runner.quit)


QUOTA = Quota.from_environment()
_samples: list[dict[str, Any]] = []


@events.request.add_listener
def _record_sample(
    request_type: str,
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    **_kwargs: Any,
) -> None:
    _samples.append(
        {
            "type": request_type,
            "name": name,
            "ms": round(float(response_time), 3),
            "ok": exception is None,
            "error": None if exception is None else str(exception)[:200],
        }
    )


@events.quitting.add_listener
def _write_samples(**_kwargs: Any) -> None:
    target = os.environ.get("ORKET_LOAD_SAMPLES")
    if target:
        Path(target).write_text(json.dumps(_samples), encoding="utf-8")
