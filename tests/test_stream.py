"""The event hub and the event tail (EVT-3, WS-3, WS-4), without a server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import insert

from app import stream
from app.events import EventLog
from app.models.base import utcnow
from app.models.runtime import Event
from app.stream import (
    EventHub,
    EventTail,
    cursor_expired,
    polling_needs_resync,
    socket_needs_resync,
    stored_events,
)


def record(event_id: int, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "event": "e", **extra}


def hub(**overrides: Any) -> EventHub:
    options = {"queue_size": 10, "max_clients": 5, "stall_grace_sec": 5.0}
    return EventHub(**{**options, **overrides})


def drain(client: Any) -> list[int]:
    ids = []
    while not client.queue.empty():
        ids.append(client.queue.get_nowait().event_id)
    return ids


# Resync rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "oldest", "expected"),
    [(0, None, False), (5, 7, True), (6, 7, False), (7, 7, False), (0, 1, False)],
)
def test_a_cursor_expires_below_the_oldest_retained_id_minus_one(
    after: int, oldest: int | None, expected: bool
) -> None:
    assert cursor_expired(after, oldest) is expected


def test_polling_never_resyncs_a_cursor_of_zero() -> None:
    assert polling_needs_resync(0, 500) is False
    assert polling_needs_resync(10, 500) is True
    assert polling_needs_resync(499, 500) is False


@pytest.mark.parametrize(
    ("after", "oldest", "last", "expected"),
    [
        (10, 5, 20, False),
        (0, 500, 600, True),  # pruned history
        (21, 5, 20, True),  # ahead of the stream
        (5, 1, 10_005, False),  # exactly 10,000 to replay
        (4, 1, 10_005, True),  # one more is too many
    ],
)
def test_socket_resync_rule(after: int, oldest: int, last: int, expected: bool) -> None:
    assert socket_needs_resync(after, oldest, last) is expected


# The hub ----------------------------------------------------------------------------


def test_subscribing_reads_the_last_published_id_with_the_registration() -> None:
    events = hub()
    events.start_at(41)
    events.publish(record(42))

    client, last_id = events.subscribe()
    events.publish(record(43))

    assert last_id == 42
    assert drain(client) == [43]


def test_every_client_gets_every_event_as_ready_json() -> None:
    events = hub()
    first, _ = events.subscribe()
    second, _ = events.subscribe()

    events.publish(record(1, data={"ä": 1}))

    frames = [first.queue.get_nowait(), second.queue.get_nowait()]
    assert [json.loads(f.text) for f in frames] == [
        {"id": 1, "event": "e", "data": {"ä": 1}}
    ] * 2
    assert "ä" in frames[0].text  # not escaped, as in the log file


def test_a_full_queue_drops_only_that_client() -> None:
    events = hub(queue_size=2)
    slow, _ = events.subscribe()
    fast, _ = events.subscribe()

    for event_id in (1, 2):
        events.publish(record(event_id))
    drain(fast)
    events.publish(record(3))
    events.publish(record(4))

    assert slow.too_slow and not fast.too_slow
    assert drain(fast) == [3, 4]
    assert drain(slow) == [1, 2]
    assert events.client_count == 1


def test_subscribe_refuses_over_the_cap_and_a_place_frees_on_unsubscribe() -> None:
    events = hub(max_clients=1)
    first, _ = events.subscribe()

    assert events.subscribe() is None
    events.unsubscribe(first)
    assert events.subscribe() is not None


def test_close_all_flags_and_wakes_every_client_and_refuses_new_ones() -> None:
    events = hub()
    client, _ = events.subscribe()

    events.close_all()

    assert client.closing
    assert client.queue.get_nowait() is None
    assert events.subscribe() is None


def test_a_dropped_client_whose_thread_is_stuck_is_cut_off_after_the_grace() -> None:
    cut = []
    events = hub(queue_size=1, stall_grace_sec=0.05)
    client, _ = events.subscribe(abort=lambda: cut.append(True))
    events.publish(record(1))
    events.publish(record(2))

    assert events.abort_stalled() == 0
    time.sleep(0.06)
    assert events.abort_stalled() == 1
    assert cut == [True]
    assert client.too_slow


def test_a_dropped_client_that_closed_itself_is_not_cut_off() -> None:
    cut = []
    events = hub(queue_size=1, stall_grace_sec=0.0)
    client, _ = events.subscribe(abort=lambda: cut.append(True))
    events.publish(record(1))
    events.publish(record(2))

    events.unsubscribe(client)

    assert events.abort_stalled() == 0
    assert cut == []


# The tail -----------------------------------------------------------------------------


@pytest.fixture
def event_log(settings, runtime_db) -> EventLog:
    return EventLog(settings, runtime_db)


def test_the_tail_starts_live_and_publishes_new_rows_in_id_order(
    settings, runtime_db, event_log
) -> None:
    before = event_log.emit("before_start", {})
    events = hub()
    tail = EventTail(settings, runtime_db, events)
    tail.start()
    client, last_id = events.subscribe()
    try:
        ids = [event_log.emit("after_start", {"n": n}) for n in range(3)]
        deadline = time.monotonic() + 5
        while events.last_event_id < ids[-1] and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        tail.stop()

    assert last_id == before
    assert drain(client) == ids


def test_a_local_emit_wakes_the_tail_at_once(settings_factory, runtime_db) -> None:
    settings = settings_factory(event_poll_ms=60_000)
    event_log = EventLog(settings, runtime_db)
    events = hub()
    tail = EventTail(settings, runtime_db, events)
    event_log.add_listener(tail.wake)
    tail.start()
    try:
        event_id = event_log.emit("local", {})
        assert events.wait_published(event_id, timeout=2)
    finally:
        tail.stop()


def _insert_with_id(runtime_db, event_id: int) -> None:
    with runtime_db.transaction() as session:
        session.execute(
            insert(Event).values(id=event_id, timestamp=utcnow(), event="x", data="{}")
        )


def test_on_postgresql_rules_a_hole_is_waited_for_before_later_ids_pass(
    settings, runtime_db, monkeypatch
) -> None:
    monkeypatch.setattr(stream, "GAP_WAIT_SEC", 0.3)
    events = hub()
    client, _ = events.subscribe()
    tail = EventTail(settings, runtime_db, events)
    tail.check_gaps = True  # ids commit out of order only on PostgreSQL
    tail.cursor = 100

    _insert_with_id(runtime_db, 102)
    published_early = tail.poll_once()
    held_back = drain(client)
    _insert_with_id(runtime_db, 101)
    published = tail.poll_once()

    assert (published_early, held_back) == (0, [])
    assert (published, drain(client)) == (2, [101, 102])


def test_on_postgresql_rules_a_hole_that_never_fills_is_passed_after_the_wait(
    settings, runtime_db, monkeypatch
) -> None:
    monkeypatch.setattr(stream, "GAP_WAIT_SEC", 0.2)
    events = hub()
    client, _ = events.subscribe()
    tail = EventTail(settings, runtime_db, events)
    tail.check_gaps = True
    tail.cursor = 200

    _insert_with_id(runtime_db, 203)
    tail.poll_once()
    assert drain(client) == []
    time.sleep(0.25)
    tail.poll_once()

    assert drain(client) == [203]
    assert tail.cursor == 203


def test_without_gap_checks_later_ids_pass_at_once(settings, runtime_db) -> None:
    events = hub()
    client, _ = events.subscribe()
    tail = EventTail(settings, runtime_db, events)
    tail.check_gaps = False
    tail.cursor = 300

    _insert_with_id(runtime_db, 305)
    tail.poll_once()

    assert drain(client) == [305]


def test_stored_events_pages_through_a_range(
    runtime_db, event_log, monkeypatch
) -> None:
    monkeypatch.setattr(stream, "REPLAY_PAGE", 2)
    ids = [event_log.emit("stored", {"n": n}) for n in range(5)]

    replayed = list(stored_events(runtime_db, ids[0], ids[3]))

    assert [r["id"] for r in replayed] == ids[1:4]
    assert replayed[0]["data"] == {"n": 1}
