"""Helpers for engine tests: assets written into a temporary config dir, runs started
the way the CLI starts them, and the events a run left behind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from app.config import Settings
from app.db import Database
from app.engine.assets import AssetStore
from app.engine.cards import CardRepository
from app.engine.context import AttemptContext, EpicScope, RunState
from app.engine.memory import Memory
from app.engine.runner import Engine
from app.engine.seeding import seed_epic
from app.engine.tools import visible_tools
from app.events import EventLog, event_record
from app.models.base import load_json
from app.models.runtime import Comment, Event, Issue
from app.models.runtime import Session as RunRow
from app.runs import enqueue_run

TEAM = {
    "name": "t_team",
    "seats": {
        "builder": {"name": "Builder", "roles": ["coder"]},
        "verifier": {"name": "Verifier", "roles": ["integrity_guard"]},
    },
}
ENVIRONMENT = {"provider": "scripted", "model": "scripted:t_script"}


def call(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool": tool, "args": args}


def status(value: str, **extra: Any) -> dict[str, Any]:
    return call("update_issue_status", status=value, **extra)


def epic_asset(issues: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "name": "Test epic",
        "description": "An epic written by a test.",
        "team": "t_team",
        "environment": "t_env",
        "architecture_governance": {"idesign": False},
        "issues": issues,
        **fields,
    }


def script_asset(replies: dict[str, list[Any]], **fields: Any) -> dict[str, Any]:
    return {"schema": "orket-script/1", "replies": replies, **fields}


class Harness:
    """One test's settings, database, events and engine."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.events = EventLog(settings, db)
        self.cards = CardRepository(db, self.events)
        self.store = AssetStore(settings)

    def write(self, category: str, name: str, data: Any) -> Path:
        folder = self.settings.config_path / category
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def setup(
        self,
        issues: list[dict[str, Any]],
        replies: dict[str, list[Any]],
        *,
        epic: str = "t_epic",
        script: dict[str, Any] | None = None,
        **epic_fields: Any,
    ) -> str:
        """Team, environment, script and one epic; returns the epic name."""
        self.write("teams", "t_team", TEAM)
        self.write("environments", "t_env", ENVIRONMENT)
        self.write("scripts", "t_script", script or script_asset(replies))
        self.write("epics", epic, epic_asset(issues, **epic_fields))
        return epic

    def start(self, target: str, **request: Any) -> str:
        answer = enqueue_run(
            self.settings,
            self.db,
            self.events,
            target=target,
            source="cli",
            as_running_worker="cli:test:1",
            **request,
        )
        return answer["session_id"]

    def run(self, target: str, **request: Any) -> tuple[str, str]:
        run_id = self.start(target, **request)
        return run_id, Engine(self.settings, self.db, self.events).run(run_id)

    def card(self, card_id: str) -> Issue:
        card = self.cards.get(card_id)
        assert card is not None, card_id
        return card

    def run_row(self, run_id: str) -> RunRow:
        with self.db.reader() as session:
            row = session.get(RunRow, run_id)
        assert row is not None
        return row

    def events_of(self, run_id: str | None = None, *names: str) -> list[dict]:
        query = select(Event).order_by(Event.id)
        if run_id is not None:
            query = query.where(Event.run_id == run_id)
        if names:
            query = query.where(Event.event.in_(names))
        with self.db.reader() as session:
            return [event_record(row) for row in session.scalars(query)]

    def comments(self, card_id: str) -> list[Comment]:
        return self.cards.comments(card_id)

    def set_columns(self, card_id: str, **values: Any) -> None:
        with self.db.transaction() as session:
            session.execute(update(Issue).where(Issue.id == card_id).values(**values))

    def verification(self, card_id: str) -> dict[str, Any]:
        return load_json(self.card(card_id).verification_json, {})


def harness_factory_fixture(
    settings_factory: Callable[..., Settings],
) -> Iterator[Callable[..., Harness]]:
    """Body of a `harness_factory` fixture: `build(**settings overrides)`."""
    made: list[Harness] = []

    def build(**overrides: Any) -> Harness:
        settings = settings_factory(**overrides)
        harness = Harness(settings, Database(settings.runtime_db_url, "runtime"))
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.db.dispose()


def attempt_context(
    harness: Harness,
    card_id: str,
    *,
    seat: str = "builder",
    review: bool = False,
    epic_name: str = "t_epic",
    build_id: str | None = None,
    run_id: str = "testrun",
) -> AttemptContext:
    """An attempt's context for calling tools directly, with the epic seeded."""
    store = harness.store
    epic = store.load_epic(epic_name)
    team = store.load_team(epic.team)
    build = build_id or epic.default_build_id
    run = RunState(
        settings=harness.settings,
        db=harness.db,
        events=harness.events,
        store=store,
        cards=harness.cards,
        memory=Memory(harness.db),
        run_id=run_id,
        organization=store.load_organization(),
    )
    seed_epic(harness.cards, epic, build, run_id)
    workspace = harness.settings.builds_root / build
    workspace.mkdir(parents=True, exist_ok=True)
    config_root = harness.settings.config_path
    scope = EpicScope(
        epic=epic,
        department="core",
        team=team,
        environment=store.load_environment(epic.environment),
        build_id=build,
        workspace=workspace,
        references=tuple((config_root / ref).resolve() for ref in epic.references),
        config_root=config_root,
    )
    found = team.find_seat(seat)
    assert found is not None
    roles = tuple(store.load_role(name, team) for name in found.roles)
    return AttemptContext(
        run,
        scope,
        card_id,
        seat,
        roles,
        review,
        visible_tools([role.tools for role in roles]),
    )
