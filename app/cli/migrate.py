"""`orket migrate`: bring both databases to head, or `--check` that they are."""

from __future__ import annotations

import click

from app.cli import orket
from app.config import database_url_from_cli
from app.migrate import MigrationError, current_revision, head_revision, upgrade
from app.services import current_services


@orket.command("migrate")
@click.option("--runtime-db", help="Runtime database: a file path (SQLite) or a URL.")
@click.option("--webhook-db", help="Webhook database: a file path (SQLite) or a URL.")
@click.option(
    "--check", is_flag=True, help="Only check; exit 1 when a database is behind."
)
def migrate_command(
    runtime_db: str | None, webhook_db: str | None, check: bool
) -> None:
    """Upgrade the runtime and webhook databases to the newest revision."""
    settings = current_services().settings
    targets = {
        "runtime": database_url_from_cli(runtime_db)
        if runtime_db
        else settings.runtime_db_url,
        "webhook": database_url_from_cli(webhook_db)
        if webhook_db
        else settings.webhook_db_url,
    }
    behind = False
    for environment, url in targets.items():
        try:
            if check:
                current, head = current_revision(url), head_revision(environment)
                behind |= current != head
                state = "at head" if current == head else "behind"
                click.echo(f"[MIGRATE] {environment}: {current} -> {head} ({state})")
                continue
            result = upgrade(environment, url)
        except MigrationError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - driver errors become one readable line
            raise click.ClickException(
                f"Database {environment} could not be migrated: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        click.echo(
            f"[MIGRATE] {environment}: {result.from_revision} -> {result.to_revision}"
        )
    if behind:
        raise SystemExit(1)
