"""Run routes: list, detail, halt, metrics (API-11), backlog, sessions and snapshots."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import and_, case, func, literal, select, true, update
from sqlalchemy.orm import Session as DbSession

from app import runs
from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_query
from app.metrics import RUNS
from app.models.base import isoformat, load_json, utcnow
from app.models.runtime import Event, Issue, Session, SessionSnapshot
from app.services import current_services

METRIC_EVENTS = ("model_usage", "tool_call")


def _run_or_404(session: DbSession, run_id: str) -> Session:
    row = session.get(Session, run_id)
    if row is None:
        raise ApiError(404)
    return row


@route(
    v1,
    "/runs",
    "GET",
    "Runs, newest queued first; the total is in X-Total-Count",
    response=schemas.RunOut,
    many=True,
    query=schemas.RunListQuery,
)
def list_runs() -> Response:
    query = parse_query(schemas.RunListQuery)
    conditions = []
    if query.status:
        conditions.append(Session.status == query.status)
    if query.type:
        conditions.append(Session.type == query.type)
    where = and_(true(), *conditions)

    with current_services().runtime_db.reader() as session:
        total = session.scalar(select(func.count()).select_from(Session).where(where))
        rows = session.scalars(
            select(Session)
            .where(where)
            .order_by(Session.queued_at.desc(), Session.id.desc())
            .limit(query.limit)
            .offset(query.offset)
        ).all()
        body = [runs.run_to_dict(row) for row in rows]

    response = jsonify(body)
    response.headers["X-Total-Count"] = str(total or 0)
    return response


@route(
    v1,
    "/runs/<run_id>",
    "GET",
    "One run with card, turn and token counts",
    response=schemas.RunDetailOut,
    errors=(404,),
)
def run_detail(run_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        row = _run_or_404(session, run_id)
        return jsonify(runs.run_to_dict(row, with_counts=True, session=session))


@route(
    v1,
    "/sessions/<run_id>",
    "GET",
    "One run",
    response=schemas.RunOut,
    errors=(404,),
)
def session_detail(run_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        return jsonify(runs.run_to_dict(_run_or_404(session, run_id)))


@route(
    v1,
    "/sessions/<run_id>/snapshot",
    "GET",
    "The latest snapshot of a run",
    response=schemas.SnapshotOut,
    errors=(404,),
)
def session_snapshot(run_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        snapshot = session.get(SessionSnapshot, run_id)
        if snapshot is None:
            raise ApiError(404)
        return jsonify(
            {
                "session_id": snapshot.session_id,
                "config_json": load_json(snapshot.config_json, {}),
                "log_history": load_json(snapshot.log_history, []),
                "captured_at": isoformat(snapshot.captured_at),
            }
        )


# Halt ---------------------------------------------------------------------------------


@route(
    v1,
    "/runs/<run_id>/halt",
    "POST",
    "Halt a queued run now, or ask a running one to stop between turns",
    response=schemas.HaltOut,
    errors=(404, 409),
)
def halt_run(run_id: str) -> tuple[Response, int]:
    services = current_services()
    with services.runtime_db.transaction() as session:
        row = _run_or_404(session, run_id)
        outcome = _request_halt(session, row)
        if outcome == "halted":
            counts = runs.run_to_dict(row, with_counts=True, session=session)["counts"]

    if outcome == "not_active":
        raise ApiError(409, "Run is not active")
    if outcome == "halting":
        return jsonify({"session_id": run_id, "status": "halting"}), 202

    RUNS.labels(status="halted").inc()
    services.events.emit("run_halted", {"run_id": run_id}, run_id=run_id)
    services.events.emit(
        "run_finished",
        {
            "run_id": run_id,
            "status": "halted",
            "cards": counts["cards"],
            "turns": counts["turns"],
            "tokens": counts["tokens"],
            "duration_ms": 0,
        },
        run_id=run_id,
    )
    return jsonify({"session_id": run_id, "status": "halted"}), 200


def _request_halt(session: DbSession, row: Session) -> str:
    """`halted` (was queued), `halting` (running, flag set) or `not_active`.

    Each update is conditional on the status just read, so a run the dispatcher
    claims at this moment is asked to halt instead of being marked halted.
    """
    if row.status == "queued":
        result = session.execute(
            update(Session)
            .where(Session.id == row.id, Session.status == "queued")
            .values(status="halted", halt_requested=True, end_time=utcnow())
        )
        session.refresh(row)
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return "halted"
    if row.status == "running":
        session.execute(
            update(Session)
            .where(Session.id == row.id, Session.status == "running")
            .values(halt_requested=True)
        )
        return "halting"
    return "not_active"


# Metrics and backlog ------------------------------------------------------------------


def role_metrics(events: list[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """API-11 from `(role, event, data)` rows in id order."""
    metrics: dict[str, dict[str, Any]] = {}
    for role, event, data_text in events:
        if not role:
            continue
        entry = metrics.setdefault(
            role, {"tokens": 0, "lines_written": 0, "last_action": "Idle", "detail": ""}
        )
        if event == "model_usage":
            entry["tokens"] += _whole_number(
                load_json(data_text, {}).get("total_tokens")
            )
        elif event == "tool_call":
            _apply_tool_call(entry, load_json(data_text, {}))
    return metrics


def _apply_tool_call(entry: dict[str, Any], data: dict[str, Any]) -> None:
    tool = data.get("tool")
    entry["last_action"] = f"Executing {tool}"
    if tool == "write_file":
        entry["lines_written"] += _whole_number(data.get("lines"))
        args = data.get("args")
        path = args.get("path", "") if isinstance(args, dict) else ""
        entry["detail"] = f"Wrote {path}"


def _whole_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


@route(
    v1,
    "/runs/<run_id>/metrics",
    "GET",
    "Tokens, lines written and last action per role, from the run's events",
    response=schemas.RoleMetricsMap,
    errors=(404,),
)
def run_metrics(run_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        _run_or_404(session, run_id)
        # Only the two events that carry numbers need their data column.
        data = case((Event.event.in_(METRIC_EVENTS), Event.data), else_=literal("{}"))
        rows = session.execute(
            select(Event.role, Event.event, data)
            .where(Event.run_id == run_id)
            .order_by(Event.id)
            .execution_options(yield_per=1000)
        )
        return jsonify(
            role_metrics([(role, event, text) for role, event, text in rows])
        )


@route(
    v1,
    "/runs/<run_id>/backlog",
    "GET",
    "Cards of the run's builds (and its epics), oldest first",
    response=schemas.CardOut,
    many=True,
    errors=(404,),
)
def run_backlog(run_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        row = _run_or_404(session, run_id)
        statement = select(Issue).where(Issue.build_id.in_(_builds_of(row)))
        epics = load_json(row.params_json, {}).get("epics")
        if epics:
            statement = statement.where(Issue.epic_id.in_(epics))
        cards = session.scalars(statement.order_by(Issue.created_at, Issue.id)).all()
        return jsonify([runs.card_to_dict(card) for card in cards])


def _builds_of(row: Session) -> list[str]:
    builds = [
        build for build in load_json(row.builds_json, []) if isinstance(build, str)
    ]
    if not builds and row.build_id:
        builds = [row.build_id]
    return builds
