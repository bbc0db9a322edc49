"""Helpers for the API tests: rows written straight into the runtime database and
asset files written into a test's config directory."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from app.db import Database
from app.models.base import dump_json
from app.models.runtime import CardTransaction, Comment, Event, Issue, Session

BASE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return BASE_TIME + timedelta(minutes=minutes)


def add_run(
    db: Database,
    run_id: str,
    *,
    status: str = "queued",
    type: str = "epic",
    target_id: str = "demo",
    builds: list[str] | None = None,
    queued_at: datetime | None = None,
    **values: Any,
) -> None:
    builds = ["build-demo"] if builds is None else builds
    with db.transaction() as session:
        session.add(
            Session(
                id=run_id,
                type=type,
                name=target_id,
                department="core",
                status=status,
                target_id=target_id,
                build_id=builds[0] if builds else None,
                builds_json=dump_json(builds),
                source="api",
                queued_at=queued_at or BASE_TIME,
                **values,
            )
        )


def add_card(
    db: Database,
    card_id: str,
    *,
    build_id: str = "build-demo",
    epic_id: str | None = "demo",
    status: str = "ready",
    created_at: datetime | None = None,
    verification: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    with db.transaction() as session:
        session.add(
            Issue(
                id=card_id,
                build_id=build_id,
                epic_id=epic_id,
                seat="builder",
                summary=f"Card {card_id}",
                status=status,
                created_at=created_at or BASE_TIME,
                updated_at=created_at or BASE_TIME,
                verification_json=dump_json(verification) if verification else None,
                **values,
            )
        )


def add_comment(
    db: Database, card_id: str, author: str, content: str, when: datetime
) -> None:
    with db.transaction() as session:
        session.add(
            Comment(issue_id=card_id, author=author, content=content, created_at=when)
        )


def add_history(
    db: Database, card_id: str, from_status: str, to_status: str, when: datetime
) -> None:
    with db.transaction() as session:
        session.add(
            CardTransaction(
                card_id=card_id,
                role="system",
                action=f"Set Status to '{to_status}'",
                from_status=from_status,
                to_status=to_status,
                timestamp=when,
            )
        )


def add_event(
    db: Database,
    event: str,
    data: dict[str, Any] | None = None,
    *,
    role: str = "system",
    run_id: str | None = None,
    card_id: str | None = None,
) -> int:
    with db.transaction() as session:
        row = Event(
            event=event,
            role=role,
            level="info",
            run_id=run_id,
            card_id=card_id,
            data=dump_json(data or {}),
            timestamp=BASE_TIME,
        )
        session.add(row)
        session.flush()
        return row.id


def write_asset(root: Path, relative: str, content: dict[str, Any] | str) -> Path:
    """Write `<root>/<relative>` (JSON for a dict, verbatim for a string)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    path.write_text(text, encoding="utf-8")
    return path


def scripted_environment(
    config_root: Path, name: str, replies: dict[str, list[Any]], **extra: Any
) -> None:
    """An environment `name` whose model replays `replies` (script `scripts/<name>`)."""
    write_asset(
        config_root,
        f"environments/{name}.json",
        {
            "name": name,
            "description": "test",
            "provider": "scripted",
            "model": f"scripted:{name}",
            **extra,
        },
    )
    write_asset(
        config_root,
        f"scripts/{name}.json",
        {"schema": "orket-script/1", "replies": replies},
    )
