"""Prometheus gauges of the webhook process, read from its database at scrape time
(OPS-2): deliveries by status, outbox rows by status and kind, dead rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.db import Database
from app.models.webhook import DELIVERY_STATUSES, OUTBOX_STATUSES, WebhookEvent
from app.webhook.outbox import status_counts

log = logging.getLogger(__name__)


class WebhookCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            deliveries = self._delivery_counts()
            outbox = status_counts(self.db)
        except SQLAlchemyError as exc:
            # The scrape still answers with the process metrics.
            log.warning("webhook gauges unavailable: %s", type(exc).__name__)
            return

        by_status = GaugeMetricFamily(
            "orket_webhook_deliveries",
            "Stored deliveries by status.",
            labels=["status"],
        )
        for status in DELIVERY_STATUSES:
            by_status.add_metric([status], deliveries.get(status, 0))
        yield by_status

        rows = GaugeMetricFamily(
            "orket_outbox_rows",
            "Outbox rows by status and kind.",
            labels=["status", "kind"],
        )
        dead = 0
        for status, kind, count in outbox:
            rows.add_metric([status, kind], count)
            if status == "dead":
                dead += count
        seen = {status for status, _, _ in outbox}
        for status in OUTBOX_STATUSES:
            if status not in seen:
                rows.add_metric([status, ""], 0)
        yield rows
        yield GaugeMetricFamily(
            "orket_outbox_dead_rows",
            "Outbox rows that ran out of attempts.",
            value=dead,
        )

    def _delivery_counts(self) -> dict[str, int]:
        query = select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
        with self.db.reader() as session:
            return {status: count for status, count in session.execute(query)}


def webhook_registry(db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WebhookCollector(db))
    return registry
