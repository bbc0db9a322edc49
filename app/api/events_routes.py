"""`GET /v1/events`: poll stored events by id (EVT-1 records), with `resync`."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import func, select

from app.api import schemas
from app.api.blueprint import v1
from app.api.openapi import route
from app.api.validation import parse_query
from app.events import event_record
from app.models.runtime import Event
from app.services import current_services


def needs_resync(after: int, oldest_id: int | None) -> bool:
    """True when events after the cursor were pruned: `0 < after < oldest - 1`."""
    return oldest_id is not None and 0 < after < oldest_id - 1


@route(
    v1,
    "/events",
    "GET",
    "Stored events with an id above `after`, in id order",
    response=schemas.EventsPageOut,
    query=schemas.EventsQuery,
)
def list_events() -> Response:
    query = parse_query(schemas.EventsQuery)
    statement = select(Event).where(Event.id > query.after)
    if query.run_id is not None:
        statement = statement.where(Event.run_id == query.run_id)
    if query.card_id is not None:
        statement = statement.where(Event.card_id == query.card_id)

    with current_services().runtime_db.reader() as session:
        oldest_id = session.scalar(select(func.min(Event.id)))
        rows = session.scalars(statement.order_by(Event.id).limit(query.limit)).all()
        events = [event_record(row) for row in rows]

    return jsonify(
        {
            "events": events,
            "last_event_id": events[-1]["id"] if events else query.after,
            "resync": needs_resync(query.after, oldest_id),
        }
    )
