"""`GET /metrics` (API-12) and the HTTP request metrics."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.api_support import add_run
from tests.conftest import API_KEY

REQUIRED_FAMILIES = (
    "orket_runs_total",
    "orket_runs_active",
    "orket_runs_queued",
    "orket_http_requests_total",
    "orket_http_request_duration_seconds",
    "orket_ws_clients",
    "orket_event_write_failures_total",
    "orket_model_calls_total",
    "orket_verifications_total",
)


def scrape(client, headers=None):
    return client.get("/metrics", headers=headers or {"X-API-Key": API_KEY})


def test_metrics_are_prometheus_text_with_every_required_family(client):
    response = scrape(client)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    for family in REQUIRED_FAMILIES:
        assert f"# TYPE {family} " in text, family


def test_run_gauges_count_run_rows_of_any_process(client, runtime_db):
    add_run(runtime_db, "r1", status="running", builds=["b1"])
    add_run(runtime_db, "q1", status="queued", builds=["b2"])
    add_run(runtime_db, "q2", status="queued", builds=["b3"])
    add_run(runtime_db, "s1", status="running", type="sandbox_deploy", builds=[])

    lines = scrape(client).get_data(as_text=True).splitlines()

    assert "orket_runs_active 1.0" in lines
    assert "orket_runs_queued 2.0" in lines


def test_requests_are_counted_by_route_method_and_status(client, auth_headers):
    def count(endpoint, status):
        labels = {"endpoint": endpoint, "method": "GET", "status": status}
        return REGISTRY.get_sample_value("orket_http_requests_total", labels) or 0.0

    before_ok = count("/v1/runs/<run_id>", "404")
    before_denied = count("/v1/version", "401")
    before_unmatched = count("unmatched", "404")
    before_timed = (
        REGISTRY.get_sample_value("orket_http_request_duration_seconds_count") or 0
    )

    client.get("/v1/runs/nope0000", headers=auth_headers)
    client.get("/v1/version")
    client.get("/v1/no/such/route", headers=auth_headers)

    assert count("/v1/runs/<run_id>", "404") == before_ok + 1
    assert count("/v1/version", "401") == before_denied + 1
    assert count("unmatched", "404") == before_unmatched + 1
    after_timed = REGISTRY.get_sample_value("orket_http_request_duration_seconds_count")
    assert after_timed == before_timed + 3


def test_metrics_need_the_key(client):
    missing = client.get("/metrics")
    wrong = scrape(client, {"X-API-Key": "wrong"})
    bearer = scrape(client, {"Authorization": f"Bearer {API_KEY}"})

    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert bearer.status_code == 200


def test_metrics_answer_while_the_database_is_down(client, app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def broken(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("down"))

    monkeypatch.setattr("app.api.metrics_routes.active_run_counts", broken)

    response = scrape(client)

    assert response.status_code == 200
    assert "orket_runs_active" not in response.get_data(as_text=True)
    assert "# TYPE orket_runs_total counter" in response.get_data(as_text=True)
