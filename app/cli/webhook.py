"""Webhook operations (OPS-2): the outbox, deliveries, review cycles, bug-fix phases
and registering the hook on Gitea.

`outbox list|show|retry`, `deliveries list`, `cycles list|reset`, `bugfix extend`,
`create-webhook`. They work on the databases directly, so they are safe to use
while the webhook server runs: its outbox worker picks up a retried row on its next
poll.
"""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from app.cli import orket
from app.gitea import GiteaClient, GiteaError
from app.models.base import isoformat
from app.models.webhook import (
    CYCLE_STATUSES,
    OUTBOX_STATUSES,
    PrReviewCycle,
    WebhookEvent,
)
from app.services import current_services
from app.webhook.bugfix import PhaseError, extend_phase
from app.webhook.outbox import NotRetryable, get_row, list_rows, retry_row, row_to_dict
from app.webhook.policy import reset_cycle

ALLOWED_HOST_REMINDER = (
    "Reminder: Gitea only delivers to hosts its [webhook] ALLOWED_HOST_LIST allows "
    "(default: external). For a receiver on loopback or a private network add e.g. "
    "ALLOWED_HOST_LIST = loopback,private to app.ini and restart Gitea."
)


# outbox -------------------------------------------------------------------------------


@orket.group("outbox")
def outbox_group() -> None:
    """Calls owed to Gitea and writes owed to the runtime database."""


@outbox_group.command("list")
@click.option("--status", type=click.Choice(OUTBOX_STATUSES), help="Only this status.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
def outbox_list(status: str | None, limit: int) -> None:
    """Outbox rows, newest first."""
    rows = list_rows(current_services().webhook_db, status, limit)
    if not rows:
        click.echo("No outbox rows.")
        return
    click.echo(f"{'ID':>6}  {'STATUS':<8} {'KIND':<26} {'TRIES':>5}  {'NEXT':<32} KEY")
    for row in rows:
        click.echo(
            f"{row.id:>6}  {row.status:<8} {row.kind:<26} {row.attempts:>5}  "
            f"{isoformat(row.next_attempt_at) or '':<32} {row.dedupe_key}"
        )


@outbox_group.command("show")
@click.argument("row_id", type=click.IntRange(1, 2**31 - 1))
def outbox_show(row_id: int) -> None:
    """One outbox row with its body and last error, as JSON."""
    row = get_row(current_services().webhook_db, row_id)
    if row is None:
        raise click.ClickException(f"Outbox row {row_id} not found")
    click.echo(json.dumps(row_to_dict(row), indent=2, ensure_ascii=False))


@outbox_group.command("retry")
@click.argument("row_id", type=click.IntRange(1, 2**31 - 1))
def outbox_retry(row_id: int) -> None:
    """Put a failed or dead row back to pending with its attempts reset."""
    try:
        row = retry_row(current_services().webhook_db, row_id)
    except (LookupError, NotRetryable) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Outbox row {row.id} ({row.kind}) is pending again.")


# deliveries ---------------------------------------------------------------------------


@orket.group("deliveries")
def deliveries_group() -> None:
    """Deliveries received from Gitea."""


@deliveries_group.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
def deliveries_list(limit: int) -> None:
    """The latest deliveries, newest first."""
    query = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
    with current_services().webhook_db.reader() as session:
        rows = list(session.scalars(query))
    if not rows:
        click.echo("No deliveries.")
        return
    for row in rows:
        click.echo(
            f"{isoformat(row.created_at)}  {row.status:<9} {row.event_type:<30} "
            f"{row.pr_key or '-':<30} {row.delivery_id}"
        )


# cycles -------------------------------------------------------------------------------


@orket.group("cycles")
def cycles_group() -> None:
    """Review cycles of pull requests."""


@cycles_group.command("list")
@click.option("--status", type=click.Choice(CYCLE_STATUSES), help="Only this status.")
def cycles_list(status: str | None) -> None:
    """Every PR's review cycle, most recently changed first."""
    query = select(PrReviewCycle).order_by(PrReviewCycle.updated_at.desc())
    if status:
        query = query.where(PrReviewCycle.status == status)
    with current_services().webhook_db.reader() as session:
        rows = list(session.scalars(query))
    if not rows:
        click.echo("No review cycles.")
        return
    for row in rows:
        click.echo(
            f"{row.pr_key:<40} {row.status:<10} cycle {row.cycle_count:<3} "
            f"updated {isoformat(row.updated_at)}"
        )


@cycles_group.command("reset")
@click.argument("pr_key")
def cycles_reset(pr_key: str) -> None:
    """Back to `active` with no rejections counted (e.g. after new requirements)."""
    services = current_services()
    try:
        previous_status, previous_count = reset_cycle(services.webhook_db, pr_key)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    services.events.emit(
        "review_cycle_reset",
        {
            "pr_key": pr_key,
            "previous_status": previous_status,
            "previous_cycle": previous_count,
        },
    )
    click.echo(
        f"{pr_key}: {previous_status} (cycle {previous_count}) -> active (cycle 0)"
    )


# bugfix -------------------------------------------------------------------------------


@orket.group("bugfix")
def bugfix_group() -> None:
    """Bug-fix phases of merged pull requests."""


@bugfix_group.command("extend")
@click.argument("rock_id")
@click.option("--reason", required=True, help="Why the phase needs more time.")
def bugfix_extend(rock_id: str, reason: str) -> None:
    """Extend a bug-fix phase by a week, up to ORKET_BUGFIX_MAX_DAYS."""
    try:
        data = extend_phase(current_services().webhook_db, rock_id, reason)
    except PhaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Bug-fix phase {rock_id} now ends {data['scheduled_end']}.")


# create-webhook -----------------------------------------------------------------------


@orket.command("create-webhook")
@click.option("--repo", "repo_name", required=True, help="owner/name on Gitea.")
@click.option("--url", required=True, help="Where Gitea should deliver.")
def create_webhook(repo_name: str, url: str) -> None:
    """Register this service's webhook on a Gitea repository."""
    settings = current_services().settings
    owner, _, repo = repo_name.partition("/")
    if not owner or not repo or "/" in repo:
        raise click.BadParameter("expected owner/name", param_hint="--repo")
    if not settings.webhook_secret:
        raise click.ClickException("GITEA_WEBHOOK_SECRET is not set")
    if not settings.gitea_credentials_configured:
        raise click.ClickException("Set GITEA_TOKEN (or GITEA_ADMIN_PASSWORD) first")

    try:
        with GiteaClient.from_settings(settings) as client:
            answer = client.create_hook(owner, repo, url, settings.webhook_secret)
    except GiteaError as exc:
        raise click.ClickException(f"Gitea did not answer: {exc}") from None
    if not answer.ok:
        raise click.ClickException(
            f"Gitea refused the webhook (HTTP {answer.status}): {answer.message}"
        )
    click.echo(f"Created webhook {answer.json['id']} on {repo_name} -> {url}")
    click.echo(ALLOWED_HOST_REMINDER)
