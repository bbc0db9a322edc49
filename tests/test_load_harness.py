"""The load harness: figures from exact samples; a tiny real run on live servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from locustfiles.harness import SCENARIOS, markdown_report, percentile, summarise
from tests.conftest import API_KEY, PROJECT_ROOT, WEBHOOK_SECRET

RESULT_KEYS = {
    "requests",
    "failures",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "error_rate_percent",
}
TEST_TOKEN = "load-test-token"
TINY_SIZES = {
    "WEBHOOK_TOTAL": "3",
    "WEBHOOK_SIGNED_TOTAL": "3",
    "API_TOTAL": "3",
    "EPIC_TOTAL": "2",
    "WS_CLIENTS": "2",
}


def sample(ms: float, ok: bool = True) -> dict:
    return {"type": "GET", "name": "x", "ms": ms, "ok": ok, "error": None}


def test_percentiles_are_nearest_rank_over_exact_timings() -> None:
    times = [float(n) for n in range(1, 101)]

    assert percentile(times, 0.50) == 50.0
    assert percentile(times, 0.95) == 95.0
    assert percentile(times, 0.99) == 99.0
    assert percentile([7.25], 0.99) == 7.2
    assert percentile([], 0.5) is None


def test_failures_and_requests_never_sent_count_against_the_error_rate() -> None:
    result = summarise([sample(10), sample(20, ok=False), sample(30)], planned=4)

    assert result == {
        "requests": 4,
        "failures": 2,
        "p50_ms": 20.0,
        "p95_ms": 30.0,
        "p99_ms": 30.0,
        "error_rate_percent": 50.0,
    }


def test_markdown_table_has_a_row_per_scenario_including_skipped_ones() -> None:
    report = {
        "timestamp_utc": "2026-01-01T00:00:00+00:00",
        "config": {
            "api_url": "http://127.0.0.1:8082",
            "webhook_url": "http://127.0.0.1:8080",
            "ws_url": "ws://127.0.0.1:8082/ws/events",
            "locust": "2",
            "python": "3",
            "cpu_count": 2,
            "error_rate_limit_percent": 1.0,
            "scenarios": {"api_heartbeat": {"requests": 2, "concurrency": 2}},
        },
        "results": {
            "api_heartbeat": summarise([sample(5), sample(6)], planned=2),
            "webhook": {**summarise([], 0), "skipped": "endpoint off"},
        },
    }

    text = markdown_report(report)

    assert "| api_heartbeat | 2 | 2 | 0 | 5.0 | 6.0 | 6.0 | 0.0 |" in text
    assert "| webhook | skipped: endpoint off |" in text


def run_harness(
    tmp_path: Path, env_overrides: dict[str, str]
) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORKET_", "GITEA_"))
    }
    env.update(
        PYTHONPATH=str(PROJECT_ROOT),
        LOAD_RESULTS_DIR=str(tmp_path / "results"),
        LOAD_MAX_SECONDS="60",
        **TINY_SIZES,
        **env_overrides,
    )
    return subprocess.run(
        [sys.executable, "-m", "locustfiles.harness"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_tiny_run_against_live_servers_writes_json_and_markdown(
    tmp_path: Path, settings_factory, live_server
) -> None:
    settings = settings_factory(
        enable_webhook_test_endpoint=True,
        webhook_test_token=TEST_TOKEN,
        rate_limit=1000,
    )
    api = live_server("api", settings)
    webhook = live_server("webhook", settings)

    result = run_harness(
        tmp_path,
        {
            "API_URL": api.url,
            "WEBHOOK_URL": webhook.url,
            "ORKET_API_KEY": API_KEY,
            "GITEA_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ORKET_WEBHOOK_TEST_TOKEN": TEST_TOKEN,
        },
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (json_path,) = sorted((tmp_path / "results").glob("*_load.json"))
    assert re.fullmatch(r"\d{8}T\d{6}Z_load\.json", json_path.name)
    md_path = json_path.with_suffix(".md")
    assert md_path.exists()

    report = json.loads(json_path.read_text())
    assert set(report) == {"timestamp_utc", "config", "results"}
    assert list(report["results"]) == [scenario.name for scenario in SCENARIOS]
    planned = {
        "webhook": 3,
        "webhook_signed": 3,
        "api_heartbeat": 3,
        "parallel_epic_trigger": 2,
        "websocket_connect": 2,
    }
    for name, figures in report["results"].items():
        assert set(figures) == RESULT_KEYS, name
        assert figures["requests"] == planned[name], name
        assert figures["failures"] == 0, (name, result.stdout)
        assert figures["error_rate_percent"] == 0.0
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    markdown = md_path.read_text()
    for name in planned:
        assert f"| {name} | {planned[name]} |" in markdown


@pytest.mark.slow
def test_run_fails_above_one_percent_errors_and_skips_a_disabled_test_endpoint(
    tmp_path: Path, settings_factory, live_server
) -> None:
    settings = settings_factory(rate_limit=1000)
    api = live_server("api", settings)
    webhook = live_server("webhook", settings)

    result = run_harness(
        tmp_path,
        {
            "API_URL": api.url,
            "WEBHOOK_URL": webhook.url,
            "ORKET_API_KEY": "not-the-key",
            "GITEA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )

    assert result.returncode == 1
    assert "error rate above 1 %" in result.stdout
    (json_path,) = sorted((tmp_path / "results").glob("*_load.json"))
    results = json.loads(json_path.read_text())["results"]
    assert results["webhook"]["skipped"] == "ORKET_WEBHOOK_TEST_TOKEN is not set"
    assert results["webhook_signed"]["failures"] == 0
    assert results["api_heartbeat"]["error_rate_percent"] == 100.0
