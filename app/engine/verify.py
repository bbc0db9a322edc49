"""Running a card's verification fixture and storing the result on the card (VER-3).

Used by review attempts, `orket verify` and the API's verify route alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.engine.cards import CardRepository, verification_of
from app.events import EventLog
from app.metrics import VERIFICATIONS
from app.models.base import dump_json
from app.models.runtime import Issue
from app.verification import run_verification


def workspace_of(settings: Settings, build_id: str) -> Path:
    return settings.builds_root / build_id


def run_fixture(
    settings: Settings,
    events: EventLog | None,
    document: dict[str, Any] | None,
    workspace: Path,
    *,
    card_id: str | None,
    run_id: str | None = None,
    role: str = "system",
) -> dict[str, Any]:
    """Run the fixture of a verification document (`fixture_path`, `scenarios`)."""
    document = document or {}
    fixture = document.get("fixture_path")

    def emit(event: str, data: dict[str, Any], **kwargs: Any) -> None:
        if events is not None:
            events.emit(event, data, role=role, **kwargs)

    result = run_verification(
        settings,
        fixture,
        list(document.get("scenarios") or []),
        workspace,
        emit=emit,
        card_id=card_id,
        run_id=run_id,
    )
    if fixture:
        VERIFICATIONS.labels(outcome=_outcome(result)).inc()
    return result


def verify_card(
    settings: Settings,
    cards: CardRepository,
    events: EventLog | None,
    card: Issue,
    *,
    run_id: str | None = None,
    role: str = "system",
) -> dict[str, Any]:
    """Run the card's fixture in its build workspace; a card with a fixture keeps the
    result in `verification.last_run`, with each scenario's status and output."""
    document = verification_of(card)
    result = run_fixture(
        settings,
        events,
        document,
        workspace_of(settings, card.build_id),
        card_id=card.id,
        run_id=run_id,
        role=role,
    )
    if document and document.get("fixture_path"):
        cards.update_fields(
            card.id, verification_json=dump_json(with_result(document, result))
        )
    return result


def with_result(document: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The verification document with `last_run` and per-scenario outcomes."""
    outcomes = {
        str(row.get("id")): row
        for row in result.get("scenarios") or []
        if isinstance(row, dict)
    }
    scenarios = []
    for scenario in document.get("scenarios") or []:
        row = outcomes.get(str(scenario.get("id")), {})
        scenarios.append(
            {
                **scenario,
                "status": row.get("status", "fail"),
                "actual_output": row.get("actual_output"),
            }
        )
    return {**document, "scenarios": scenarios, "last_run": result}


def _outcome(result: dict[str, Any]) -> str:
    if result.get("fatal"):
        return "fatal"
    total = result.get("total_scenarios") or 0
    return "passed" if total and result.get("passed") == total else "failed"
