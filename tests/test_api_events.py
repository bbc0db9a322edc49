"""`GET /v1/events`: polling by id, filters, limits and `resync`."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from app.api import schemas
from app.models.runtime import Event
from tests.api_support import add_event


def poll(client, headers, **query):
    return client.get("/v1/events", query_string=query, headers=headers)


@pytest.fixture
def five_events(runtime_db) -> list[int]:
    return [
        add_event(runtime_db, "run_queued", {"run_id": "r1"}, run_id="r1"),
        add_event(
            runtime_db, "card_created", {"issue_id": "C1"}, run_id="r1", card_id="C1"
        ),
        add_event(runtime_db, "run_queued", {"run_id": "r2"}, run_id="r2"),
        add_event(
            runtime_db,
            "tool_call",
            {"tool": "read_file"},
            role="coder",
            run_id="r1",
            card_id="C1",
        ),
        add_event(
            runtime_db, "delivery_received", {"delivery_id": "d"}, role="webhook"
        ),
    ]


def test_events_after_a_cursor_in_id_order(client, auth_headers, five_events):
    response = poll(client, auth_headers, after=five_events[1])

    assert response.status_code == 200
    body = response.get_json()
    schemas.EventsPageOut.model_validate(body)
    assert [e["id"] for e in body["events"]] == five_events[2:]
    assert body["last_event_id"] == five_events[-1]
    assert body["resync"] is False
    assert body["events"][1] == {
        "id": five_events[3],
        "timestamp": "2026-03-02T10:00:00.000000+00:00",
        "role": "coder",
        "event": "tool_call",
        "level": "info",
        "run_id": "r1",
        "card_id": "C1",
        "data": {"tool": "read_file"},
    }


def test_events_filtered_by_run_and_card(client, auth_headers, five_events):
    by_run = poll(client, auth_headers, run_id="r1").get_json()
    by_card = poll(client, auth_headers, card_id="C1", run_id="r1").get_json()

    assert [e["id"] for e in by_run["events"]] == [
        five_events[0],
        five_events[1],
        five_events[3],
    ]
    assert [e["id"] for e in by_card["events"]] == [five_events[1], five_events[3]]


def test_limit_pages_through_and_the_cursor_follows(client, auth_headers, five_events):
    first = poll(client, auth_headers, limit=2).get_json()
    second = poll(
        client, auth_headers, limit=2, after=first["last_event_id"]
    ).get_json()

    assert [e["id"] for e in first["events"]] == five_events[:2]
    assert [e["id"] for e in second["events"]] == five_events[2:4]


def test_nothing_new_keeps_the_cursor(client, auth_headers, five_events):
    body = poll(client, auth_headers, after=five_events[-1]).get_json()

    assert body == {"events": [], "last_event_id": five_events[-1], "resync": False}


def test_resync_when_the_cursor_is_older_than_what_is_kept(
    client, auth_headers, runtime_db, five_events
):
    with runtime_db.transaction() as session:
        session.execute(delete(Event).where(Event.id <= five_events[2]))
    oldest = five_events[3]

    # after = oldest - 1 expects exactly the oldest kept id next: nothing was lost.
    just_behind = poll(client, auth_headers, after=oldest - 1).get_json()
    one_lost = poll(client, auth_headers, after=oldest - 2).get_json()
    too_old = poll(client, auth_headers, after=oldest - 3).get_json()
    from_start = poll(client, auth_headers, after=0).get_json()

    assert just_behind["resync"] is False
    assert one_lost["resync"] is True
    assert too_old["resync"] is True
    assert [e["id"] for e in too_old["events"]] == five_events[3:]
    assert from_start["resync"] is False


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": -1}, "after"),
        ({"after": "x"}, "after"),
    ],
)
def test_bad_queries_are_422(client, auth_headers, query, field):
    response = poll(client, auth_headers, **query)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", field]


def test_limit_1000_is_allowed(client, auth_headers, five_events):
    assert poll(client, auth_headers, limit=1000).status_code == 200
