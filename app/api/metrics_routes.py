"""Prometheus text at `GET /metrics` (API-12) and the HTTP request metrics.

Counters and histograms live in `app.metrics` (the default registry). The run
gauges `orket_runs_active` and `orket_runs_queued` are read from the `sessions`
table at scrape time by a collector of this app, because runs are queued and
finished by other processes (webhook, CLI) too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from app.api.auth import require_api_key
from app.api.system import active_run_counts
from app.db import Database
from app.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from app.services import current_services

log = logging.getLogger(__name__)

metrics_blueprint = Blueprint("metrics", __name__)
REGISTRY_KEY = "orket_run_gauges"
UNMATCHED = "unmatched"


class RunGaugeCollector(Collector):
    """`orket_runs_active` and `orket_runs_queued` from the runtime database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = active_run_counts(self.db)
        except SQLAlchemyError as exc:
            # A scrape still answers with every other metric while the database is down.
            log.warning("run gauges unavailable: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "orket_runs_active", "Runs running now.", value=counts.get("running", 0)
        )
        yield GaugeMetricFamily(
            "orket_runs_queued",
            "Runs waiting to be claimed.",
            value=counts.get("queued", 0),
        )


@metrics_blueprint.before_request
def _authenticate() -> None:
    if request.method == "OPTIONS":
        return
    require_api_key(current_services().settings, request)


@metrics_blueprint.get("/metrics")
def prometheus_metrics() -> Response:
    run_gauges: CollectorRegistry = current_app.extensions[REGISTRY_KEY]
    text = generate_latest(REGISTRY) + generate_latest(run_gauges)
    return Response(text, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def install_metrics(app: Flask) -> None:
    """The `/metrics` route, its run gauges, and request counting for every route."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunGaugeCollector(app.extensions["orket"].runtime_db))
    app.extensions[REGISTRY_KEY] = registry
    app.register_blueprint(metrics_blueprint)
    # First, so refused requests (oversized bodies, bad keys) are timed as well.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_request)


def _start_timer() -> None:
    g.orket_request_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    HTTP_REQUESTS.labels(
        endpoint=rule, method=request.method, status=str(response.status_code)
    ).inc()
    started = g.get("orket_request_started")
    if started is not None:
        HTTP_REQUEST_DURATION.observe(time.perf_counter() - started)
    return response
