"""Which cards a tick works on, and why the rest are stuck (ENG-5).

Review-pending cards come first, then `ready` cards whose dependencies are all `done`
cards of the build, each group by `created_at`, then `id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.engine.cards import CardRepository, depends_on
from app.engine.state_machine import REVIEW_PENDING_STATUSES
from app.models.runtime import Issue

FINISHED = frozenset({"done", "canceled"})


@dataclass(frozen=True)
class Planned:
    card_id: str
    review: bool


def plan_tick(
    cards: CardRepository, build_id: str, epic_id: str, only: str | None = None
) -> list[Planned]:
    """The attempts of the next tick; empty when nothing can move."""
    build = cards.in_build(build_id)
    done = {card.id for card in build if card.status == "done"}
    scope = [
        card for card in build if (card.id == only if only else card.epic_id == epic_id)
    ]
    review = [Planned(c.id, True) for c in scope if c.status in REVIEW_PENDING_STATUSES]
    work = [
        Planned(c.id, False)
        for c in scope
        if c.status == "ready" and all(dep in done for dep in depends_on(c))
    ]
    return review + work


def stuck_cards(scope: list[Issue], build: list[Issue]) -> list[dict[str, Any]]:
    """Unfinished cards with status, wait reason and unusable dependencies."""
    statuses = {card.id: card.status for card in build}
    stuck = []
    for card in scope:
        if card.status in FINISHED:
            continue
        entry: dict[str, Any] = {
            "id": card.id,
            "status": card.status,
            "wait_reason": card.wait_reason,
        }
        broken = [
            f"{dep} ({statuses.get(dep, 'missing')})"
            for dep in depends_on(card)
            if statuses.get(dep) in (None, "canceled", "archived")
        ]
        if broken:
            entry["dependencies"] = broken
        stuck.append(entry)
    return stuck


def describe_stuck(stuck: list[dict[str, Any]]) -> str:
    parts = []
    for entry in stuck:
        state = entry["status"]
        if entry.get("wait_reason"):
            state += f"/{entry['wait_reason']}"
        text = f"{entry['id']} ({state})"
        if entry.get("dependencies"):
            text += " depends on " + ", ".join(entry["dependencies"])
        parts.append(text)
    return "Cards not finished: " + "; ".join(parts)
