"""Engine commands (OPS-2): `demo`, `run-epic`, `check-assets` and `verify`.

Runs happen in this process, exactly as a job thread would run them: the row is
inserted `running` for this CLI worker under the build conflict check, a small thread
keeps its heartbeat fresh, and progress is printed from the run's events. Ctrl-C asks
the run to halt; the turn in flight finishes first.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.cli import orket
from app.engine.assets import AssetStore
from app.engine.cards import CardRepository
from app.engine.runner import Engine
from app.engine.seeding import verification_document
from app.engine.verify import run_fixture, verify_card, workspace_of
from app.jobs import Heartbeat, worker_id
from app.migrate import MigrationError, require_head
from app.models.runtime import Issue
from app.models.runtime import Session as RunRow
from app.runs import (
    RunRequestError,
    enqueue_run,
    request_halt,
    run_cards_query,
)
from app.services import Services, current_services
from app.serving.startup import copy_packaged_fixtures

DEMO_EPIC = "demo"
JOIN_POLL_SEC = 0.2
EXIT_UNKNOWN_ID = 2

console = Console(highlight=False)


@orket.command("demo")
@click.option("--build-id", help="Build to run the demo in (default build-demo).")
def demo_command(build_id: str | None) -> None:
    """Run the packaged demo epic from a clean start and show every step."""
    services = _services_at_head()
    copied = copy_packaged_fixtures(services.settings)
    if copied:
        console.print(f"Demo fixtures copied: {', '.join(copied)}", markup=False)
    _, cards = _run_in_process(
        services, target=DEMO_EPIC, type="epic", build_id=build_id, reset=True
    )
    raise SystemExit(0 if cards and all(c.status == "done" for c in cards) else 1)


@orket.command("run-epic")
@click.argument("target")
@click.option("--build-id", help="Build id (default build-<epic stem>).")
@click.option("--department", help="Department of the asset (default core).")
@click.option("--reset", is_flag=True, help="Start every card of the scope afresh.")
@click.option("--enqueue", is_flag=True, help="Only queue the run for the API.")
def run_epic_command(
    target: str,
    build_id: str | None,
    department: str | None,
    reset: bool,
    enqueue: bool,
) -> None:
    """Run an epic, rock or issue in this process (or queue it with --enqueue)."""
    services = _services_at_head()
    if enqueue:
        answer = _enqueue(
            services,
            target=target,
            build_id=build_id,
            department=department,
            reset=reset,
        )
        console.print(
            f"Queued run {answer['session_id']} (build {answer['build_id']})",
            markup=False,
        )
        return
    status, _ = _run_in_process(
        services,
        target=target,
        build_id=build_id,
        department=department,
        reset=reset,
    )
    raise SystemExit(0 if status == "done" else 1)


@orket.command("check-assets")
@click.option("--department", help="Check one department (and what it falls back on).")
def check_assets_command(department: str | None) -> None:
    """Load every asset file and report its errors and warnings by file."""
    report = AssetStore(current_services().settings).check(department)
    for line in report.lines():
        click.echo(line)
    raise SystemExit(0 if report.ok else 1)


@orket.command("verify")
@click.argument("card_id")
@click.option("--json", "as_json", is_flag=True, help="Print only the result object.")
def verify_command(card_id: str, as_json: bool) -> None:
    """Run the verification fixture of a card (or of an epic's issue) now."""
    services = _services_at_head()
    result = _verify(services, card_id)
    if result is None:
        click.echo(f"Unknown card or issue {card_id}", err=True)
        raise SystemExit(EXIT_UNKNOWN_ID)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        for line in result.get("logs") or []:
            click.echo(line)
    total = result.get("total_scenarios") or 0
    passed = not result.get("fatal") and total > 0 and result.get("passed") == total
    raise SystemExit(0 if passed else 1)


# Helpers ------------------------------------------------------------------------------


def _services_at_head() -> Services:
    services = current_services()
    try:
        require_head("runtime", services.settings.runtime_db_url)
    except MigrationError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    return services


def _enqueue(services: Services, **request: Any) -> dict[str, Any]:
    try:
        return enqueue_run(
            services.settings,
            services.runtime_db,
            services.events,
            source="cli",
            **request,
        )
    except RunRequestError as exc:
        click.echo(exc.detail, err=True)
        raise SystemExit(1) from None


def _run_in_process(services: Services, **request: Any) -> tuple[str, list[Issue]]:
    """Insert the run as this CLI's, run it with progress lines, print the cards."""
    answer = _enqueue(services, as_running_worker=worker_id("cli"), **request)
    run_id = answer["session_id"]
    services.events.add_listener(
        lambda record: _print_event(record) if record["run_id"] == run_id else None
    )
    console.print(
        f"Run {run_id} started (build {answer['build_id']})", style="bold", markup=False
    )
    engine = Engine(services.settings, services.runtime_db, services.events)
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(engine.run(run_id)), name=f"engine-{run_id}"
    )
    with Heartbeat(services.runtime_db, run_id, services.settings.heartbeat_sec):
        worker.start()
        _wait_with_halt(services, run_id, worker)
    status = outcome[0] if outcome else "failed"
    cards = _run_cards(services, run_id)
    console.print(_card_table(cards))
    console.print(f"Run {run_id}: {status}", style="bold", markup=False)
    return status, cards


def _wait_with_halt(services: Services, run_id: str, worker: threading.Thread) -> None:
    while worker.is_alive():
        try:
            worker.join(JOIN_POLL_SEC)
        except KeyboardInterrupt:
            request_halt(services.runtime_db, run_id)
            console.print("Halt requested; finishing the turn in flight…", markup=False)


def _run_cards(services: Services, run_id: str) -> list[Issue]:
    with services.runtime_db.reader() as session:
        row = session.get(RunRow, run_id)
        if row is None:
            return []
        return list(session.scalars(run_cards_query(row)))


def _verify(services: Services, card_id: str) -> dict[str, Any] | None:
    cards = CardRepository(services.runtime_db, services.events)
    card = cards.get(card_id)
    if card is not None:
        return verify_card(services.settings, cards, services.events, card)
    store = AssetStore(services.settings)
    for department in store.departments():
        found = store.find_epic_issue(card_id, department)
        if found is not None:
            epic, issue = found
            return run_fixture(
                services.settings,
                services.events,
                verification_document(issue),
                workspace_of(services.settings, epic.default_build_id),
                card_id=issue.id,
            )
    return None


# Progress -----------------------------------------------------------------------------


def _print_event(record: dict[str, Any]) -> None:
    line = _progress_line(record)
    if line is not None:
        console.print(line)


def _progress_line(record: dict[str, Any]) -> Text | None:
    """One line for a turn, tool call, status change, verification or run result."""
    data = record.get("data") or {}
    card = record.get("card_id") or ""
    event = record.get("event")
    if event == "turn_start":
        review = " review" if data.get("review") else ""
        return Text(
            f"[turn] {card} {data.get('role')}@{data.get('seat')} "
            f"turn {data.get('turn')}{review}",
            style="cyan",
        )
    if event == "tool_call":
        result = data.get("result") or {}
        outcome = "ok" if result.get("ok") else f"error: {result.get('error')}"
        return Text(
            f"  [tool] {data.get('tool')} {_call_target(data)}{outcome}",
            style="green" if result.get("ok") else "yellow",
        )
    if event == "tool_blocked":
        return Text(
            f"  [blocked] {data.get('tool')}: {data.get('reason')}", style="red"
        )
    if event == "card_status_changed":
        reason = f" ({data.get('wait_reason')})" if data.get("wait_reason") else ""
        return Text(
            f"[status] {card} {data.get('from')} -> {data.get('to')}{reason} "
            f"by {data.get('by')}",
            style="magenta",
        )
    if event == "verification_completed":
        fatal = " FATAL" if data.get("fatal") else ""
        return Text(
            f"[verify] {card} {data.get('passed')}/{data.get('total')} passed{fatal}",
            style="blue",
        )
    if event in ("turn_failed", "card_blocked", "run_failed"):
        detail = data.get("error") or data.get("detail") or data.get("reason")
        return Text(f"[{event}] {card} {detail}".rstrip(), style="red")
    return None


def _call_target(data: dict[str, Any]) -> str:
    args = data.get("args") or {}
    for key in ("path", "status", "issue_id", "summary"):
        if isinstance(args.get(key), str):
            return f"{args[key]} "
    return ""


def _card_table(cards: list[Issue]) -> Table:
    table = Table(title="Cards")
    for column in ("Card", "Status", "Wait reason", "Retries", "Summary"):
        table.add_column(column)
    for card in cards:
        cells = (card.id, card.status, card.wait_reason or "", str(card.retry_count))
        table.add_row(*(Text(cell) for cell in (*cells, card.summary)))
    return table
