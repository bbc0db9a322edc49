"""`/ws/events` against a real gunicorn server (WS-1..WS-4, EVT-3, PROC-4).

Events are emitted from this test process into the server's database, exactly as
the webhook process does, so they reach sockets through the server's event tail.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from typing import Any

import pytest
import requests
import websocket
from sqlalchemy import delete, insert

from app.db import Database
from app.events import EventLog
from app.models.base import isoformat, utcnow
from app.models.runtime import Event
from tests.conftest import API_KEY

pytestmark = pytest.mark.slow

FAST = {"event_poll_ms": 50, "dispatch_poll_ms": 50}
CLOSE = websocket.ABNF.OPCODE_CLOSE


def ws_url(server: Any, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/ws/events" + query


def connect(server: Any, query: str = "", **kwargs: Any) -> websocket.WebSocket:
    kwargs.setdefault("header", [f"X-API-Key: {API_KEY}"])
    if "origin" not in kwargs:
        kwargs["suppress_origin"] = True  # websocket-client sends one by default
    # Its pure-Python UTF-8 check takes ~0.1 s per large frame; json.loads checks too.
    kwargs.setdefault("skip_utf8_validation", True)
    return websocket.create_connection(ws_url(server, query), timeout=10, **kwargs)


def receive(ws: websocket.WebSocket) -> tuple[dict[str, Any] | None, int | None]:
    """The next JSON frame, or (None, close code) once the server closed."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == CLOSE:
            return None, int.from_bytes(frame.data[:2], "big") if frame.data else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(frame.data), None


def next_event(ws: websocket.WebSocket) -> dict[str, Any]:
    """The next EVT-1 record, skipping control frames; fails on a close."""
    while True:
        frame, code = receive(ws)
        assert frame is not None, f"socket closed with {code}"
        if "type" not in frame:
            return frame


def events_until(ws: websocket.WebSocket, last_id: int) -> list[dict[str, Any]]:
    received = []
    while not received or received[-1]["id"] < last_id:
        received.append(next_event(ws))
    return received


def close_code(ws: websocket.WebSocket, limit: int = 100_000) -> int | None:
    """Read until the server's close frame; its code."""
    for _ in range(limit):
        frame, code = receive(ws)
        if frame is None:
            return code
    raise AssertionError("the server never closed the socket")


def refusal(server: Any, query: str = "", **kwargs: Any) -> Any:
    kwargs.setdefault("header", [])
    with pytest.raises(websocket.WebSocketBadStatusException) as raised:
        connect(server, query, **kwargs)
    return raised.value


@pytest.fixture
def event_log(settings_factory: Any) -> Any:
    settings = settings_factory()
    db = Database(settings.runtime_db_url, "runtime")
    yield EventLog(settings, db)
    db.dispose()


@pytest.fixture
def start_api(live_server: Any, settings_factory: Any) -> Any:
    """Start an API server with fast polls; killed at the end (graceful stops are
    tested on their own and take seconds)."""
    started = []

    def start(**overrides: Any) -> Any:
        server = live_server("api", settings_factory(**{**FAST, **overrides}))
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def api(start_api: Any) -> Any:
    return start_api()


def test_hello_is_the_first_frame_with_the_last_published_id(api, event_log) -> None:
    watcher = connect(api)
    receive(watcher)
    published = event_log.emit("probe", {})
    assert next_event(watcher)["id"] == published

    ws = connect(api)
    hello, _ = receive(ws)

    assert hello == {"type": "hello", "last_event_id": published}


def test_live_events_arrive_as_evt1_records(api, event_log) -> None:
    ws = connect(api)
    receive(ws)

    event_id = event_log.emit(
        "tool_call", {"tool": "x"}, role="coder", run_id="abcd1234"
    )

    assert next_event(ws) == {
        "id": event_id,
        "timestamp": stored_timestamp(event_log, event_id),
        "role": "coder",
        "event": "tool_call",
        "level": "info",
        "run_id": "abcd1234",
        "card_id": None,
        "data": {"tool": "x"},
    }


def stored_timestamp(event_log: EventLog, event_id: int) -> str:
    with event_log.db.reader() as session:
        return isoformat(session.get(Event, event_id).timestamp)


def test_every_key_form_and_an_allowed_origin_are_accepted(api) -> None:
    accepted = [
        connect(api, f"?api_key={API_KEY}", header=[]),
        connect(api, header=[f"Authorization: Bearer {API_KEY}"]),
        connect(api, header=[f"X-API-Key: {API_KEY}"]),
        connect(api, origin="http://localhost:5173"),
    ]

    assert [receive(ws)[0]["type"] for ws in accepted] == ["hello"] * 4


KEY = [f"X-API-Key: {API_KEY}"]
REFUSALS = [
    ("", {}, 401, {"detail": "Not authenticated"}),
    ("?api_key=wrong", {}, 403, {"detail": "Could not validate credentials"}),
    (
        "",
        {"header": ["X-API-Key: wrong"]},
        403,
        {"detail": "Could not validate credentials"},
    ),
    (
        "",
        {"header": KEY, "origin": "https://evil.example"},
        403,
        {"detail": "Origin not allowed"},
    ),
]


def test_handshake_refusals_are_json_before_the_upgrade(api) -> None:
    for query, options, status, body in REFUSALS:
        refused = refusal(api, query, **options)

        assert (refused.status_code, json.loads(refused.resp_body)) == (status, body)
    assert refusal(api).resp_headers["www-authenticate"] == "Bearer"
    for after in ("abc", "-1", "1.5"):
        refused = refusal(api, f"?after={after}", header=KEY)

        assert refused.status_code == 422
        assert json.loads(refused.resp_body)["detail"][0]["loc"] == ["query", "after"]


def test_resume_replays_stored_events_then_live_ones(api, event_log) -> None:
    first = event_log.emit("one", {})
    stored = [event_log.emit("two", {}), event_log.emit("three", {})]

    ws = connect(api, f"?after={first}")
    receive(ws)
    replayed = events_until(ws, stored[-1])
    live = event_log.emit("four", {})

    assert [e["id"] for e in replayed] == stored
    assert next_event(ws)["id"] == live


def test_resume_while_events_are_emitted_has_no_gap_or_duplicate(
    api, event_log
) -> None:
    total = 150
    emitted: list[int] = []

    def emit_steadily() -> None:
        for n in range(total):
            emitted.append(event_log.emit("burst", {"n": n}))
            time.sleep(0.004)

    def caught_up() -> bool:
        return len(emitted) == total and seen[-1] == emitted[-1]

    ws = connect(api)
    receive(ws)
    emitter = threading.Thread(target=emit_steadily)
    emitter.start()
    seen = [next_event(ws)["id"] for _ in range(20)]
    ws.close()

    # Reconnect a few times mid-stream, each time resuming from the last id seen.
    while not caught_up():
        ws = connect(api, f"?after={seen[-1]}")
        assert receive(ws)[0]["type"] == "hello"
        for _ in range(15):
            seen.append(next_event(ws)["id"])
            if caught_up():
                break
        ws.close()
    emitter.join()

    assert seen == sorted(set(seen))
    assert set(emitted) <= set(seen)
    assert seen == list(range(seen[0], seen[-1] + 1))


def _delete_events_up_to(db: Database, event_id: int) -> None:
    with db.transaction() as session:
        session.execute(delete(Event).where(Event.id <= event_id))


def test_cursor_older_than_retention_gets_resync(api, event_log) -> None:
    watcher = connect(api)
    receive(watcher)
    ids = [event_log.emit("old", {"n": n}) for n in range(5)]
    events_until(watcher, ids[-1])  # all published before some are pruned
    _delete_events_up_to(event_log.db, ids[2])
    oldest = ids[3]

    ws = connect(api, f"?after={ids[0]}")
    hello, _ = receive(ws)
    resync, _ = receive(ws)
    live = event_log.emit("after-resync", {})

    assert resync == {
        "type": "resync",
        "oldest_event_id": oldest,
        "last_event_id": hello["last_event_id"],
    }
    assert next_event(ws)["id"] == live  # nothing replayed


def test_cursor_ahead_of_the_stream_gets_resync(api) -> None:
    ws = connect(api, "?after=999999")
    hello, _ = receive(ws)
    resync, _ = receive(ws)

    assert resync["type"] == "resync"
    assert resync["last_event_id"] == hello["last_event_id"]


def test_cursor_more_than_ten_thousand_behind_gets_resync(api, event_log) -> None:
    start = event_log.emit("start", {})
    rows = [
        {"timestamp": utcnow(), "event": "bulk", "data": "{}"} for _ in range(10_001)
    ]
    with event_log.db.transaction() as session:
        session.execute(insert(Event), rows)
    newest = event_log.emit("newest", {})
    deadline = time.monotonic() + 10
    while True:
        ws = connect(api, f"?after={start}")
        hello, _ = receive(ws)
        if hello["last_event_id"] >= newest or time.monotonic() > deadline:
            break
        ws.close()
        time.sleep(0.1)

    resync, _ = receive(ws)

    assert hello["last_event_id"] - start > 10_000
    assert resync["type"] == "resync"


def test_events_written_by_another_process_arrive_via_the_tail(
    api, settings_factory
) -> None:
    # A raw insert on its own connection, as the webhook process writes them.
    db = Database(settings_factory().runtime_db_url, "webhook-side")
    ws = connect(api)
    receive(ws)
    with db.transaction() as session:
        session.execute(
            insert(Event).values(
                timestamp=utcnow(),
                event="delivery_received",
                role="webhook",
                data='{"delivery_id": "d-1"}',
            )
        )
    db.dispose()

    record = next_event(ws)

    assert record["event"] == "delivery_received"
    assert record["role"] == "webhook"
    assert record["data"] == {"delivery_id": "d-1"}


def test_ping_frame_after_silence(start_api) -> None:
    server = start_api(ws_ping_sec=0.5)
    ws = connect(server)
    receive(ws)

    started = time.monotonic()
    frame, _ = receive(ws)

    assert frame == {"type": "ping"}
    assert time.monotonic() - started < 3


def test_binary_and_text_client_frames_are_read_and_discarded(api, event_log) -> None:
    ws = connect(api)
    receive(ws)

    ws.send_binary(b"\x00\xff" * 1000)
    ws.send("not json {")
    ws.send(json.dumps({"type": "subscribe"}))
    event_id = event_log.emit("still-streaming", {})

    assert next_event(ws)["id"] == event_id


def test_message_over_64_kib_closes_only_that_socket_with_1009(api, event_log) -> None:
    big = connect(api)
    other = connect(api)
    receive(big)
    receive(other)

    big.send_binary(b"x" * (64 * 1024 + 1))
    event_id = event_log.emit("after-big", {})

    assert close_code(big) == 1009
    assert next_event(other)["id"] == event_id


def test_over_the_cap_closes_1013_while_the_json_api_answers(
    start_api, event_log
) -> None:
    server = start_api(ws_max_clients=2)
    held = [connect(server), connect(server)]
    for ws in held:
        receive(ws)

    extra = connect(server)
    health = requests.get(server.url + "/health", timeout=5)
    metrics = requests.get(
        server.url + "/metrics", headers={"X-API-Key": API_KEY}, timeout=5
    )

    assert close_code(extra) == 1013
    assert health.status_code == 200
    assert metrics.status_code == 200
    assert "orket_ws_clients 2.0" in metrics.text.splitlines()
    event_id = event_log.emit("held-sockets-still-served", {})
    assert [next_event(ws)["id"] for ws in held] == [event_id, event_id]


def test_a_closed_socket_frees_its_place_under_the_cap(start_api) -> None:
    server = start_api(ws_max_clients=1)
    first = connect(server)
    receive(first)
    first.shutdown()  # gone without a close frame, as a crashed client goes

    deadline = time.monotonic() + 5
    while True:
        again = connect(server)
        frame, code = receive(again)
        if frame is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert frame is not None and frame["type"] == "hello"


def test_slow_client_is_closed_1013_while_others_keep_receiving(
    start_api, event_log
) -> None:
    server = start_api(ws_queue=8, ws_ping_sec=30, event_poll_ms=20)
    # The slow client never reads while events flow: once the socket buffers are
    # full the server's sends to it block, and its queue overflows.
    slow = connect(server, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    fast = connect(server)
    receive(slow)
    receive(fast)
    received: list[int] = []

    def read_fast() -> None:
        while (record := next_event(fast))["event"] != "marker":
            received.append(record["id"])

    reader = threading.Thread(target=read_fast, daemon=True)
    reader.start()
    blob = "x" * 200_000
    emitted = []
    for n in range(50):
        # Keep the fast client within a few events of the stream, however busy
        # this machine is, so only the slow one can overflow.
        deadline = time.monotonic() + 20
        while len(received) < n - 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        emitted.append(event_log.emit("large", {"blob": blob, "n": n}))
    event_log.emit("marker", {})
    reader.join(timeout=60)

    assert received == emitted
    slow_frames = 0
    code = None
    while code is None:
        frame, code = receive(slow)
        slow_frames += frame is not None
    assert code == 1013
    assert slow_frames < len(emitted)


def test_shutdown_closes_every_socket_with_1001(api) -> None:
    sockets = [connect(api), connect(api)]
    for ws in sockets:
        receive(ws)

    api.proc.send_signal(signal.SIGTERM)

    assert [close_code(ws) for ws in sockets] == [1001, 1001]


def test_the_demo_epic_triggered_over_the_api_is_watched_to_run_finished(api) -> None:
    ws = connect(api)
    receive(ws)

    response = requests.post(
        api.url + "/v1/system/run-active",
        json={"path": "model/core/epics/demo.json", "build_id": "demo-ws"},
        headers={"X-API-Key": API_KEY},
        timeout=10,
    )
    run_id = response.json()["session_id"]
    seen = []
    while not seen or seen[-1]["event"] != "run_finished":
        record = next_event(ws)
        if record["run_id"] == run_id:
            seen.append(record)

    assert response.status_code == 202
    names = [record["event"] for record in seen]
    assert names[:2] == ["run_queued", "run_started"]
    assert "tool_call" in names and "verification_completed" in names
    assert seen[-1]["data"]["status"] == "done"
    assert seen[-1]["data"]["cards"] == {"done": 2}


def test_sigint_stops_the_server_quickly_with_a_socket_open(api) -> None:
    ws = connect(api)
    receive(ws)
    started = time.monotonic()

    api.proc.send_signal(signal.SIGINT)
    api.proc.wait(timeout=20)

    assert time.monotonic() - started < 10
