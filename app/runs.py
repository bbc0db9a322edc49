"""Runs as the outside sees them: resolving a target, enqueueing with the build
conflict check, and the API's Run and Card objects (API-4, API-8, JOB-3).

Used by the API (`run-active`), the webhook policy and the CLI. Nothing here imports
Flask; errors carry the exact API message in `.detail` and the HTTP status in
`.status`.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.engine.assets import (
    CORE,
    AssetError,
    AssetNotFoundError,
    AssetStore,
)
from app.engine.seeding import card_id_for
from app.events import EventLog
from app.models.base import dump_json, isoformat, load_json, utcnow
from app.models.runtime import RUN_TYPES, CardTransaction, Comment, Event, Issue
from app.models.runtime import Session as RunRow

log = logging.getLogger(__name__)

# Dots alone (`.`, `..`) would name the builds folder or its parent.
BUILD_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")
ACTIVE = ("queued", "running")
# Any constant works: every enqueue takes the same transaction-scoped lock.
ENQUEUE_LOCK_KEY = 0x6F726B6574


class RunRequestError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NoTarget(RunRequestError):
    status = 400

    def __init__(self) -> None:
        super().__init__("No asset ID provided.")


class TargetNotFound(RunRequestError):
    status = 404

    def __init__(self, target: str) -> None:
        super().__init__(f"Card {target} not found.")


class AssetInvalid(RunRequestError):
    status = 422


class BadBuildId(RunRequestError):
    status = 422

    def __init__(self, build_id: str) -> None:
        super().__init__(
            f"Invalid build_id '{build_id}': use 1-64 letters, digits, '.', '_' or '-'."
        )


class RunConflict(RunRequestError):
    status = 409

    def __init__(self, build_id: str, run_id: str) -> None:
        super().__init__(f"Build {build_id} already has an active run {run_id}")
        self.run_id = run_id


@dataclass(frozen=True)
class ResolvedTarget:
    """What a target names and which builds a run of it uses (JOB-3)."""

    type: str
    target_id: str
    name: str
    department: str
    build_id: str
    builds: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)


def validate_build_id(build_id: str | None) -> None:
    if build_id is not None and not BUILD_ID.match(build_id):
        raise BadBuildId(build_id)


def target_from(target: str | None, path: str | None) -> str:
    """API-8 step 1: the explicit target, else the stem of `path`."""
    if target and target.strip():
        return target.strip()
    if path and path.strip():
        stem = PurePosixPath(path.strip().replace("\\", "/")).stem
        if stem:
            return stem
    raise NoTarget()


def department_from(department: str | None, path: str | None) -> str:
    """The field, else the component after `model` in `path`, else `core`."""
    if department and department.strip():
        return department.strip()
    if path:
        parts = PurePosixPath(path.replace("\\", "/")).parts
        for index, part in enumerate(parts[:-1]):
            if part == "model" and index + 1 < len(parts) - 1:
                return parts[index + 1]
    return CORE


def resolve_target(
    settings: Settings,
    runtime_db: Database,
    *,
    target: str,
    type: str | None = None,
    department: str = CORE,
    build_id: str | None = None,
    store: AssetStore | None = None,
) -> ResolvedTarget:
    """Epic asset → rock asset → card → issue of an epic asset, limited to `type`.

    Raises TargetNotFound, AssetInvalid or BadBuildId.
    """
    validate_build_id(build_id)
    store = store or AssetStore(settings)
    kinds = (type,) if type else ("epic", "rock", "issue")
    for kind in kinds:
        resolved = _RESOLVERS[kind](
            settings, runtime_db, store, target, department, build_id
        )
        if resolved is not None:
            return resolved
    raise TargetNotFound(target)


def _epic_target(
    settings: Settings,
    runtime_db: Database,
    store: AssetStore,
    target: str,
    department: str,
    build_id: str | None,
) -> ResolvedTarget | None:
    if store.locate("epics", target, department) is None:
        return None
    epic = _load(lambda: store.load_epic(target, department))
    build = build_id or epic.default_build_id
    return ResolvedTarget(
        "epic",
        epic.stem,
        epic.name,
        department,
        build,
        (build,),
        {"epics": [epic.stem]},
    )


def _rock_target(
    settings: Settings,
    runtime_db: Database,
    store: AssetStore,
    target: str,
    department: str,
    build_id: str | None,
) -> ResolvedTarget | None:
    if store.locate("rocks", target, department) is None:
        return None
    rock = _load(lambda: store.load_rock(target, department))
    if build_id:
        builds: tuple[str, ...] = (build_id,)
    else:
        builds = tuple(dict.fromkeys(f"build-{entry.epic}" for entry in rock.epics))
    return ResolvedTarget(
        "rock",
        rock.stem,
        rock.name,
        department,
        build_id or f"rock-build-{rock.stem}",
        builds,
        {"build_id": build_id, "epics": [entry.epic for entry in rock.epics]},
    )


def _issue_target(
    settings: Settings,
    runtime_db: Database,
    store: AssetStore,
    target: str,
    department: str,
    build_id: str | None,
) -> ResolvedTarget | None:
    card = _find_card(runtime_db, target, build_id)
    if card is not None:
        epic_department = _epic_department(store, card.epic_id, department)
        return ResolvedTarget(
            "issue",
            card.id,
            card.summary,
            department,
            card.build_id,
            (card.build_id,),
            {
                "card_id": card.id,
                "epic": card.epic_id,
                "epic_department": epic_department,
                "epics": [card.epic_id] if card.epic_id else [],
            },
        )
    found = store.find_epic_issue(target, department)
    if found is None:
        return None
    epic, issue = found
    build = build_id or epic.default_build_id
    card_id = card_id_for(issue.id, build, epic)
    return ResolvedTarget(
        "issue",
        card_id,
        issue.summary,
        department,
        build,
        (build,),
        {
            "card_id": card_id,
            "epic": epic.stem,
            "epic_department": department,
            "epics": [epic.stem],
        },
    )


_RESOLVERS = {"epic": _epic_target, "rock": _rock_target, "issue": _issue_target}


def _load(load: Any) -> Any:
    try:
        return load()
    except AssetError as exc:
        raise AssetInvalid(str(exc)) from None
    except AssetNotFoundError as exc:
        raise AssetInvalid(str(exc)) from None


def _find_card(runtime_db: Database, target: str, build_id: str | None) -> Issue | None:
    with runtime_db.reader() as session:
        card = session.get(Issue, target)
        if card is None and build_id and "@" not in target:
            card = session.get(Issue, f"{target}@{build_id}")
        return card


def _epic_department(store: AssetStore, epic_id: str | None, department: str) -> str:
    """The department whose lookup finds the card's epic (the given one first)."""
    if not epic_id or store.locate("epics", epic_id, department) is not None:
        return department
    for name in store.departments():
        if store.locate("epics", epic_id, name) is not None:
            return name
    return department


# Enqueueing ---------------------------------------------------------------------------


def enqueue_run(
    settings: Settings,
    runtime_db: Database,
    events: EventLog,
    *,
    target: str | None,
    type: str | None = None,
    department: str | None = None,
    build_id: str | None = None,
    reset: bool = False,
    source: str = "api",
    path: str | None = None,
    as_running_worker: str | None = None,
) -> dict[str, Any]:
    """Resolve the target and insert its run row, refusing a build conflict (409).

    With `as_running_worker` (the CLI) the row is inserted `running`, claimed by that
    worker, and `run_started` is emitted; otherwise it is `queued` with `run_queued`.
    """
    name = target_from(target, path)
    dept = department_from(department, path)
    if type is not None and type not in RUN_TYPES:
        raise RunRequestError(f"Unknown run type '{type}'")
    resolved = resolve_target(
        settings, runtime_db, target=name, type=type, department=dept, build_id=build_id
    )
    row = _insert_run(runtime_db, resolved, reset, source, as_running_worker)

    if as_running_worker:
        events.emit(
            "run_started",
            {"run_id": row.id, "worker": as_running_worker},
            run_id=row.id,
        )
    else:
        events.emit(
            "run_queued",
            {
                "run_id": row.id,
                "type": resolved.type,
                "target": resolved.target_id,
                "build_id": resolved.build_id,
                "builds": list(resolved.builds),
                "source": source,
            },
            run_id=row.id,
        )
    log.info("run %s %s for %s", row.id, row.status, resolved.target_id)
    return {"session_id": row.id, "status": row.status, "build_id": resolved.build_id}


def _insert_run(
    runtime_db: Database,
    resolved: ResolvedTarget,
    reset: bool,
    source: str,
    worker: str | None,
) -> RunRow:
    now = utcnow()
    with runtime_db.transaction() as session:
        if runtime_db.is_postgresql:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ENQUEUE_LOCK_KEY}
            )
        conflict = active_build_conflict(session, resolved.builds)
        if conflict is not None:
            raise RunConflict(*conflict)
        row = RunRow(
            id=_unused_run_id(session),
            type=resolved.type,
            name=resolved.name,
            department=resolved.department,
            status="running" if worker else "queued",
            target_id=resolved.target_id,
            build_id=resolved.build_id,
            builds_json=dump_json(list(resolved.builds)),
            params_json=dump_json({**resolved.params, "reset": reset}),
            source=source,
            queued_at=now,
            start_time=now if worker else None,
            heartbeat_at=now if worker else None,
            worker_id=worker,
            halt_requested=False,
        )
        session.add(row)
    return row


def active_build_conflict(
    session: Session, builds: tuple[str, ...] | list[str]
) -> tuple[str, str] | None:
    """(build, run id) of a queued or running run sharing a build, if any."""
    wanted = set(builds)
    rows = session.execute(
        select(RunRow.id, RunRow.builds_json).where(
            RunRow.status.in_(ACTIVE), RunRow.type.in_(RUN_TYPES)
        )
    )
    for run_id, builds_json in rows:
        shared = wanted.intersection(load_json(builds_json, []))
        if shared:
            return sorted(shared)[0], run_id
    return None


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def _unused_run_id(session: Session) -> str:
    while True:
        run_id = new_run_id()
        if session.get(RunRow, run_id) is None:
            return run_id


def request_halt(runtime_db: Database, run_id: str) -> None:
    with runtime_db.transaction() as session:
        session.execute(
            update(RunRow).where(RunRow.id == run_id).values(halt_requested=True)
        )


# The Run and Card objects (API-4) -------------------------------------------------


def run_to_dict(
    row: RunRow, *, with_counts: bool = False, session: Session | None = None
) -> dict[str, Any]:
    transcript = load_json(row.transcript, None) if row.transcript else None
    body: dict[str, Any] = {
        "id": row.id,
        "type": row.type,
        "name": row.name,
        "department": row.department,
        "status": row.status,
        "task_input": row.task_input,
        "target_id": row.target_id,
        "build_id": row.build_id,
        "builds": load_json(row.builds_json, []),
        "source": row.source,
        "transcript": transcript if isinstance(transcript, list) else None,
        "queued_at": isoformat(row.queued_at),
        "start_time": isoformat(row.start_time),
        "end_time": isoformat(row.end_time),
        "error": row.error,
        "halt_requested": bool(row.halt_requested),
    }
    if with_counts:
        if session is None:
            raise ValueError("with_counts needs a session")
        body["counts"] = run_counts(session, row)
    return body


def run_cards_query(row: RunRow) -> Any:
    """The cards of a run: the target card of an issue run, else the cards of its
    builds belonging to its epics."""
    params = load_json(row.params_json, {})
    if row.type == "issue":
        return select(Issue).where(Issue.id == (params.get("card_id") or row.target_id))
    query = select(Issue).where(Issue.build_id.in_(load_json(row.builds_json, [])))
    epics = params.get("epics")
    if epics:
        query = query.where(Issue.epic_id.in_(epics))
    return query.order_by(Issue.created_at, Issue.id)


def run_counts(session: Session, row: RunRow) -> dict[str, Any]:
    cards: dict[str, int] = {}
    for card in session.scalars(run_cards_query(row)):
        cards[card.status] = cards.get(card.status, 0) + 1
    turns = session.scalar(
        select(func.count()).where(
            Event.run_id == row.id, Event.event == "turn_complete"
        )
    )
    usage = session.scalars(
        select(Event.data).where(Event.run_id == row.id, Event.event == "model_usage")
    )
    tokens = 0
    for data in usage:
        value = load_json(data, {}).get("total_tokens")
        if isinstance(value, int):
            tokens += value
    return {"cards": cards, "turns": int(turns or 0), "tokens": tokens}


def card_to_dict(
    row: Issue, *, session: Session | None = None, with_detail: bool = False
) -> dict[str, Any]:
    """The Card object; with `with_detail` (needs a session) also `comments` and
    `history`, oldest first."""
    body: dict[str, Any] = {
        "id": row.id,
        "build_id": row.build_id,
        "epic_id": row.epic_id,
        "parent_id": row.parent_id,
        "session_id": row.session_id,
        "seat": row.seat,
        "summary": row.summary,
        "type": row.type,
        "priority": _priority(row.priority),
        "sprint": row.sprint,
        "status": row.status,
        "wait_reason": row.wait_reason,
        "assignee": row.assignee,
        "note": row.note,
        "description": row.description,
        "requirements": row.requirements,
        "resolution": row.resolution,
        "credits_spent": float(row.credits_spent or 0.0),
        "retry_count": row.retry_count,
        "max_retries": row.max_retries,
        "depends_on": load_json(row.depends_on_json, []),
        "verification": load_json(row.verification_json, {}) or None,
        "metrics": load_json(row.metrics_json, {}) or None,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }
    if with_detail:
        if session is None:
            raise ValueError("with_detail needs a session")
        body["comments"] = card_comments(session, row.id)
        body["history"] = card_history(session, row.id)
    return body


def card_comments(session: Session, card_id: str) -> list[dict[str, Any]]:
    query = (
        select(Comment)
        .where(Comment.issue_id == card_id)
        .order_by(Comment.created_at, Comment.id)
    )
    return [
        {
            "id": comment.id,
            "author": comment.author,
            "content": comment.content,
            "created_at": isoformat(comment.created_at),
        }
        for comment in session.scalars(query)
    ]


def card_history(session: Session, card_id: str) -> list[dict[str, Any]]:
    query = (
        select(CardTransaction)
        .where(CardTransaction.card_id == card_id)
        .order_by(CardTransaction.timestamp, CardTransaction.id)
    )
    return [
        {
            "timestamp": isoformat(entry.timestamp),
            "role": entry.role,
            "action": entry.action,
            "from_status": entry.from_status,
            "to_status": entry.to_status,
        }
        for entry in session.scalars(query)
    ]


def _priority(value: str | None) -> float:
    try:
        return float(value) if value is not None else 2.0
    except ValueError:
        return 2.0
