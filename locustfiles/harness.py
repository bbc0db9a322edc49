"""`python -m locustfiles.harness [--ui]`: the OPS-5 load run (make load, load-ui).

Headless (the default), each scenario runs as its own Locust process with a fixed
number of requests, one after another, against servers that are already running:

| scenario | requests (variable, default) | concurrent users (variable) |
| --- | --- | --- |
| webhook | WEBHOOK_TOTAL, 100 | WEBHOOK_CONCURRENCY, 25 |
| webhook_signed | WEBHOOK_SIGNED_TOTAL, 100 | WEBHOOK_SIGNED_CONCURRENCY, 25 |
| api_heartbeat | API_TOTAL, 200 | API_CONCURRENCY, 50 |
| parallel_epic_trigger | EPIC_TOTAL, 10 | EPIC_CONCURRENCY, 10 |
| websocket_connect | WS_CLIENTS, 50 | WS_CONCURRENCY, 50 |

Targets are API_URL, WEBHOOK_URL and WS_URL (default: the local binds from the
settings); key, secret and test token come from the settings. The run writes
`<results>/<YYYYmmddTHHMMSSZ>_load.json` and `.md` (results: LOAD_RESULTS_DIR,
default `benchmarks/results/`) and exits 1 when any scenario's error rate is above
1 %. `webhook` is `skipped` when the `/webhook/test` endpoint is off.

With `--ui`, Locust's web UI serves every user class on http://127.0.0.1:8089 with
no request quota; stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from app.config import Settings, SettingsError, load_settings
from locustfiles.targets import target_urls

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
ERROR_RATE_LIMIT_PERCENT = 1.0
UI_PORT = 8089
LOCUSTFILES = ("webhook.py", "runtime.py", "ws.py")


@dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: str
    user_class: str
    total_variable: str
    default_total: int
    concurrency_variable: str
    default_concurrency: int
    target: str  # "api" or "webhook": which server must answer /health first

    def total(self, environ: dict[str, str]) -> int:
        return _positive_int(environ, self.total_variable, self.default_total)

    def concurrency(self, environ: dict[str, str]) -> int:
        wanted = _positive_int(
            environ, self.concurrency_variable, self.default_concurrency
        )
        return min(wanted, self.total(environ))


SCENARIOS = (
    Scenario(
        "webhook",
        "webhook.py",
        "WebhookDryRunUser",
        "WEBHOOK_TOTAL",
        100,
        "WEBHOOK_CONCURRENCY",
        25,
        "webhook",
    ),
    Scenario(
        "webhook_signed",
        "webhook.py",
        "WebhookSignedUser",
        "WEBHOOK_SIGNED_TOTAL",
        100,
        "WEBHOOK_SIGNED_CONCURRENCY",
        25,
        "webhook",
    ),
    Scenario(
        "api_heartbeat",
        "runtime.py",
        "HeartbeatUser",
        "API_TOTAL",
        200,
        "API_CONCURRENCY",
        50,
        "api",
    ),
    Scenario(
        "parallel_epic_trigger",
        "runtime.py",
        "EpicTriggerUser",
        "EPIC_TOTAL",
        10,
        "EPIC_CONCURRENCY",
        10,
        "api",
    ),
    Scenario(
        "websocket_connect",
        "runtime.py",
        "WebSocketUser",
        "WS_CLIENTS",
        50,
        "WS_CONCURRENCY",
        50,
        "api",
    ),
)


class HarnessError(Exception):
    """The run cannot start or a Locust process broke; the message says why."""


def _positive_int(environ: dict[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise HarnessError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


# Statistics ---------------------------------------------------------------------


def percentile(sorted_ms: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when it is empty."""
    if not sorted_ms:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_ms)))
    return round(sorted_ms[rank - 1], 1)


def summarise(samples: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    """OPS-5 figures of one scenario; requests never sent count as failures."""
    missing = max(0, planned - len(samples))
    requests_ = len(samples) + missing
    failures = sum(1 for sample in samples if not sample["ok"]) + missing
    times = sorted(float(sample["ms"]) for sample in samples)
    return {
        "requests": requests_,
        "failures": failures,
        "p50_ms": percentile(times, 0.50),
        "p95_ms": percentile(times, 0.95),
        "p99_ms": percentile(times, 0.99),
        "error_rate_percent": round(failures / requests_ * 100, 2)
        if requests_
        else 0.0,
    }


def skipped(reason: str) -> dict[str, Any]:
    return {
        "requests": 0,
        "failures": 0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "error_rate_percent": 0.0,
        "skipped": reason,
    }


def failure_reasons(samples: list[dict[str, Any]], limit: int = 5) -> list[str]:
    counts: dict[str, int] = {}
    for sample in samples:
        if not sample["ok"]:
            key = f"{sample['name']}: {sample['error']}"
            counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return [f"{count} x {reason}" for reason, count in ordered[:limit]]


# Running ------------------------------------------------------------------------


def check_reachable(urls: dict[str, str], needed: set[str]) -> None:
    for target in sorted(needed):
        url = urls[target] + "/health"
        try:
            status = requests.get(url, timeout=5).status_code
        except requests.RequestException as exc:
            raise HarnessError(
                f"{target} server not reachable at {url} ({type(exc).__name__}); "
                f"start it first (make {target})"
            ) from None
        if status != 200:
            raise HarnessError(f"{target} server at {url} answers /health {status}")


def webhook_test_endpoint_off(settings: Settings, urls: dict[str, str]) -> str | None:
    """Why the `webhook` scenario is skipped, or None when the endpoint answers."""
    if not settings.webhook_test_token:
        return "ORKET_WEBHOOK_TEST_TOKEN is not set"
    probe = requests.post(
        urls["webhook"] + "/webhook/test",
        json={"event": "test", "payload": {}},
        headers={"X-Orket-Test-Token": settings.webhook_test_token},
        timeout=10,
    )
    if probe.status_code == 404:
        return "ORKET_ENABLE_WEBHOOK_TEST_ENDPOINT is off on the server"
    return None


def locust_environment(
    environ: dict[str, str], urls: dict[str, str], stamp: str, **extra: str
) -> dict[str, str]:
    """A Locust child's environment: targets, run stamp, and our code importable."""
    python_path = (str(PROJECT_ROOT), environ.get("PYTHONPATH", ""))
    env = {
        key: value
        for key, value in environ.items()
        if key not in ("ORKET_LOAD_TOTAL", "ORKET_LOAD_SAMPLES")
    }
    env.update(
        API_URL=urls["api"],
        WEBHOOK_URL=urls["webhook"],
        WS_URL=urls["ws"],
        ORKET_LOAD_STAMP=stamp,
        PYTHONPATH=os.pathsep.join(part for part in python_path if part),
        **extra,
    )
    return env


def run_scenario(
    scenario: Scenario,
    environ: dict[str, str],
    urls: dict[str, str],
    stamp: str,
    workdir: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    total = scenario.total(environ)
    users = scenario.concurrency(environ)
    max_seconds = _positive_int(environ, "LOAD_MAX_SECONDS", 180)
    samples_path = workdir / f"{scenario.name}.samples.json"
    log_path = workdir / f"{scenario.name}.locust.log"
    env = locust_environment(
        environ,
        urls,
        stamp,
        ORKET_LOAD_TOTAL=str(total),
        ORKET_LOAD_SAMPLES=str(samples_path),
    )
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(HERE / scenario.locustfile),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{max_seconds}s",
        "--stop-timeout",
        "10",
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
        scenario.user_class,
    ]
    with open(log_path, "wb") as log:
        code = subprocess.call(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max_seconds + 60,
        )
    if code != 0 or not samples_path.exists():
        output = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise HarnessError(
            f"Locust for {scenario.name} exited {code}:\n" + "\n".join(output)
        )
    samples = json.loads(samples_path.read_text(encoding="utf-8"))
    return summarise(samples, total), samples


def run_headless(settings: Settings, environ: dict[str, str]) -> int:
    urls = target_urls(settings, environ)
    check_reachable(urls, {scenario.target for scenario in SCENARIOS})
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="orket-load-") as tmp:
        for scenario in SCENARIOS:
            if scenario.name == "webhook":
                reason = webhook_test_endpoint_off(settings, urls)
                if reason:
                    results[scenario.name] = skipped(reason)
                    print(f"[load] {scenario.name}: skipped ({reason})", flush=True)
                    continue
            print(
                f"[load] {scenario.name}: {scenario.total(environ)} requests, "
                f"{scenario.concurrency(environ)} concurrent",
                flush=True,
            )
            result, samples = run_scenario(scenario, environ, urls, stamp, Path(tmp))
            results[scenario.name] = result
            print(f"[load] {scenario.name}: {format_result(result)}", flush=True)
            for reason in failure_reasons(samples):
                print(f"[load]   {reason}", flush=True)

    report = {
        "timestamp_utc": now.isoformat(),
        "config": run_config(settings, environ, urls),
        "results": results,
    }
    results_dir = Path(
        environ.get("LOAD_RESULTS_DIR") or PROJECT_ROOT / "benchmarks/results"
    )
    json_path, md_path = write_report(report, results_dir, stamp)
    print(f"[load] wrote {json_path} and {md_path}", flush=True)

    over = [
        name
        for name, result in results.items()
        if result["error_rate_percent"] > ERROR_RATE_LIMIT_PERCENT
    ]
    if over:
        print(f"[load] FAILED: error rate above 1 % in {', '.join(over)}", flush=True)
        return 1
    return 0


def run_config(
    settings: Settings, environ: dict[str, str], urls: dict[str, str]
) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "api_url": urls["api"],
        "webhook_url": urls["webhook"],
        "ws_url": urls["ws"],
        "scenarios": {
            scenario.name: {
                "requests": scenario.total(environ),
                "concurrency": scenario.concurrency(environ),
            }
            for scenario in SCENARIOS
        },
        "error_rate_limit_percent": ERROR_RATE_LIMIT_PERCENT,
        "locust": version("locust"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        # Server and load generator share the machine: a busy one inflates latencies.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def format_result(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    return (
        f"{result['requests']} requests, {result['failures']} failures, "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
        f"p99 {result['p99_ms']} ms, errors {result['error_rate_percent']} %"
    )


def write_report(report: dict[str, Any], folder: Path, stamp: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stamp}_load.json"
    md_path = folder / f"{stamp}_load.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown_report(report), encoding="utf-8")
    return json_path, md_path


def markdown_report(report: dict[str, Any]) -> str:
    config = report["config"]

    def cell(value: Any) -> str:
        return "—" if value is None else str(value)

    lines = [
        f"# Load run {report['timestamp_utc']}",
        "",
        f"API {config['api_url']}, webhook {config['webhook_url']}, "
        f"WebSocket {config['ws_url']}; Locust {config['locust']}, "
        f"Python {config['python']}, {config['cpu_count']} CPUs, load average "
        f"{config.get('load_average_1m')} at the end of the run.",
        "",
        "| Scenario | Requests | Concurrency | Failures | p50 ms | p95 ms | p99 ms "
        "| Error rate % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in report["results"].items():
        concurrency = config["scenarios"].get(name, {}).get("concurrency")
        if "skipped" in result:
            lines.append(
                f"| {name} | skipped: {result['skipped']} | {cell(concurrency)} "
                "| — | — | — | — | — |"
            )
            continue
        lines.append(
            f"| {name} | {result['requests']} | {cell(concurrency)} "
            f"| {result['failures']} | {cell(result['p50_ms'])} "
            f"| {cell(result['p95_ms'])} | {cell(result['p99_ms'])} "
            f"| {result['error_rate_percent']} |"
        )
    lines += [
        "",
        "Percentiles are nearest-rank over every request of the scenario, from exact "
        "timings; a run fails above "
        f"{config['error_rate_limit_percent']} % errors (429s count as errors).",
        "",
    ]
    return "\n".join(lines)


def run_ui(environ: dict[str, str], settings: Settings) -> int:
    urls = target_urls(settings, environ)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    env = locust_environment(environ, urls, stamp)
    print(f"[load] Locust web UI on http://127.0.0.1:{UI_PORT} (Ctrl-C stops it)")
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(HERE / name) for name in LOCUSTFILES),
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(UI_PORT),
        "--class-picker",
    ]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m locustfiles.harness",
        description="Run the OPS-5 load scenarios against running servers.",
    )
    parser.add_argument(
        "--ui", action="store_true", help=f"Locust web UI on port {UI_PORT} instead"
    )
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        settings = load_settings()
        if args.ui:
            return run_ui(environ, settings)
        return run_headless(settings, environ)
    except (HarnessError, SettingsError) as exc:
        print(f"[load] {exc}", file=sys.stderr, flush=True)
        return 1
    except requests.RequestException as exc:
        print(f"[load] a server stopped answering: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
