"""Seeding an epic's issues into a build as cards, and resuming them (ENG-3).

In the epic's default build (`build-<stem>`) a card's id is the issue id; in any other
build it is `<issue id>@<build id>`, with `depends_on` rewritten the same way, so one
epic can run in many builds without its cards moving. Cards made by `create_issue`
keep their `ISSUE-…` id everywhere.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.engine.assets import Epic
from app.engine.assets import Issue as AssetIssue
from app.engine.cards import CardRepository, new_card
from app.engine.sprint import sprint_for
from app.models.base import utcnow
from app.models.runtime import Issue

CHILD_PREFIX = "ISSUE-"
TARGETED_RESTART = frozenset(
    {"blocked", "waiting_for_developer", "in_progress", "ready_for_testing"}
)


class SeedConflict(Exception):
    """Two epics claim the same card id in one build (an `asset_error`)."""


def card_id_for(issue_id: str, build_id: str, epic: Epic) -> str:
    if build_id == epic.default_build_id or issue_id.startswith(CHILD_PREFIX):
        return issue_id
    if "@" in issue_id:
        return issue_id
    return f"{issue_id}@{build_id}"


def asset_issue_id(card_id: str) -> str:
    """The issue id a card was made from (`DEMO-1@b` → `DEMO-1`)."""
    return card_id.partition("@")[0]


def verification_document(issue: AssetIssue) -> dict[str, Any] | None:
    if issue.verification is None:
        return None
    return {
        "fixture_path": issue.verification.fixture_path,
        "scenarios": [
            {
                "id": scenario.id,
                "description": scenario.description,
                "input_data": scenario.input_data,
                "expected_output": scenario.expected_output,
            }
            for scenario in issue.verification.scenarios
        ],
    }


def seed_epic(
    cards: CardRepository, epic: Epic, build_id: str, run_id: str | None
) -> list[str]:
    """Insert the epic's missing cards into the build; return every card id of the
    epic in the build (asset issues first, in order, then cards made in runs).

    Raises SeedConflict when a card id already belongs to another epic.
    """
    wanted = {card_id_for(issue.id, build_id, epic): issue for issue in epic.issues}
    existing = cards.many(wanted)
    for card_id, card in existing.items():
        if card.epic_id != epic.stem or card.build_id != build_id:
            raise SeedConflict(
                f"card {card_id} of build {card.build_id} belongs to epic "
                f"'{card.epic_id}' and is also an issue of epic '{epic.stem}'"
            )

    now = utcnow()
    sprint = sprint_for(now)
    missing = [
        _card_from_issue(epic, issue, card_id, build_id, run_id, sprint, now, offset)
        for offset, (card_id, issue) in enumerate(wanted.items())
        if card_id not in existing
    ]
    cards.insert(missing, run_id=run_id)
    seeded = list(wanted)
    extra = [
        card.id for card in cards.in_build(build_id, epic.stem) if card.id not in wanted
    ]
    return seeded + extra


def _card_from_issue(
    epic: Epic,
    issue: AssetIssue,
    card_id: str,
    build_id: str,
    run_id: str | None,
    sprint: str,
    now: Any,
    offset: int,
) -> Issue:
    # One microsecond apart, so `created_at, id` ordering keeps the epic's order.
    return new_card(
        card_id=card_id,
        build_id=build_id,
        epic_id=epic.stem,
        session_id=run_id,
        seat=issue.seat,
        summary=issue.summary,
        sprint=sprint,
        created_at=now + timedelta(microseconds=offset),
        type=issue.type,
        priority=issue.priority,
        note=issue.note,
        description=issue.description,
        requirements=issue.requirements,
        max_retries=issue.max_retries,
        depends_on=[card_id_for(dep, build_id, epic) for dep in issue.depends_on],
        verification=verification_document(issue),
    )


def resume(cards: CardRepository, card_ids: list[str], run_id: str | None) -> None:
    """Cards left `in_progress` by an earlier run go back to `ready`."""
    for card in cards.many(card_ids).values():
        if card.status == "in_progress":
            cards.move(card.id, "resume", run_id=run_id)


def reset(cards: CardRepository, card_ids: list[str], run_id: str | None) -> None:
    """Every card to `ready` with `retry_count=0` and no `wait_reason`."""
    for card in cards.many(card_ids).values():
        if card.status == "ready":
            cards.update_fields(card.id, retry_count=0, wait_reason=None)
        else:
            cards.move(card.id, "reset", run_id=run_id, values={"retry_count": 0})


def restart_target(cards: CardRepository, card_id: str, run_id: str | None) -> None:
    """A targeted issue run takes its card back to `ready` from a stopped state."""
    card = cards.get(card_id)
    if card is not None and card.status in TARGETED_RESTART:
        cards.move(
            card_id, "targeted_restart", run_id=run_id, values={"retry_count": 0}
        )
