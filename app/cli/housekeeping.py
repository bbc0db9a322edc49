"""`orket prune-events`: event retention on demand (EVT-5)."""

from __future__ import annotations

import click

from app.cli import orket
from app.housekeeping import prune_events
from app.services import current_services


@orket.command("prune-events")
@click.option(
    "--max-age-days",
    type=click.FloatRange(min=0, min_open=True),
    help="Delete events older than this (default ORKET_EVENT_RETENTION_DAYS).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    help="Then keep at most this many newest events (default ORKET_EVENT_MAX_ROWS).",
)
def prune_events_command(max_age_days: float | None, max_rows: int | None) -> None:
    """Delete old events, drop old webhook payloads and finished outbox rows."""
    services = current_services()
    result = prune_events(
        services.settings,
        services.runtime_db,
        services.webhook_db,
        services.events,
        max_age_days=max_age_days,
        max_rows=max_rows,
    )
    click.echo(
        f"[PRUNE] events deleted: {result.events_deleted} "
        f"({result.events_by_age} by age, {result.events_by_count} over the row cap)"
    )
    click.echo(
        f"[PRUNE] webhook payloads dropped: {result.payloads_dropped}; "
        f"done outbox rows deleted: {result.outbox_deleted}"
    )
