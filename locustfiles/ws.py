"""WebSocket fan-out load: many sockets held open while events flow (issue 5 benchmark).

`WebSocketListenerUser` connects to `/ws/events` with the key, stays connected and
reports, as request type `WS`:

- `/ws/events connect until hello`: time from connecting to the `hello` frame;
- `/ws/events fan-out`: for every event frame, the time from the event's own
  `timestamp` (taken when it was emitted) to its arrival here, so it covers the
  insert, the tail, the hub and the socket's send. Server and load generator must
  share a clock (the same machine).

`EventSourceUser` makes the API emit events at a steady rate by saving a small file
through `POST /v1/system/save` (each save emits `file_saved`): one event per second
per source, `EVENT_SOURCES` sources (default 10). `HeartbeatUser` from
`locustfiles/runtime.py` shows whether the JSON API keeps answering meanwhile. For
1,000 sockets start the API with `ORKET_WS_MAX_CLIENTS=1100`, then for example:

    EVENT_SOURCES=2 .venv/bin/locust -f locustfiles/ws.py,locustfiles/runtime.py \
        --headless -u 1003 -r 200 -t 60s \
        WebSocketListenerUser EventSourceUser HeartbeatUser

(`fixed_count` gives 1,000 listeners and the sources; the rest are heartbeats).
Targets come from API_URL / WS_URL, else the local binds.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any

import websocket
from locust import HttpUser, User, constant, constant_throughput, events, task

from locustfiles.common import default_urls, settings

SETTINGS = settings()
URLS = default_urls(SETTINGS)
KEY = SETTINGS.api_key or ""
# Longer than the server's ping period, so an idle stream is not a timeout.
RECEIVE_TIMEOUT_SEC = SETTINGS.ws_ping_sec + 10


def report(name: str, elapsed_ms: float, error: BaseException | None = None) -> None:
    events.request.fire(
        request_type="WS",
        name=name,
        response_time=elapsed_ms,
        response_length=0,
        exception=error,
        context={},
    )


def fanout_ms(record: dict[str, Any]) -> float:
    emitted = datetime.fromisoformat(record["timestamp"])
    return (datetime.now(timezone.utc) - emitted).total_seconds() * 1000


class WebSocketListenerUser(User):
    """One socket held for the whole run; every event's delivery time is reported."""

    host = URLS["ws"]
    fixed_count = 1000
    wait_time = constant(0)
    ws: websocket.WebSocket | None = None

    def on_start(self) -> None:
        self.connect()

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def connect(self) -> None:
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                self.host,
                header=[f"X-API-Key: {KEY}"],
                timeout=RECEIVE_TIMEOUT_SEC,
                suppress_origin=True,
                skip_utf8_validation=True,
            )
            hello = json.loads(self.ws.recv())
            if hello.get("type") != "hello":
                raise ValueError(f"first frame {hello.get('type')!r}, not hello")
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            self.ws = None
            report("/ws/events connect until hello", _since(started), exc)
            time.sleep(1)
            return
        report("/ws/events connect until hello", _since(started))

    @task
    def listen(self) -> None:
        if self.ws is None:
            self.connect()
            return
        try:
            frame = json.loads(self.ws.recv())
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            # A close (1013 too slow, 1001 shutdown) or a dead socket: count it, then
            # reconnect on the next turn.
            report("/ws/events fan-out", 0.0, exc)
            self.ws = None
            return
        if "type" not in frame:
            report("/ws/events fan-out", fanout_ms(frame))


class EventSourceUser(HttpUser):
    """Saves a small file once a second per user; each save is one `file_saved`."""

    host = URLS["api"]
    fixed_count = int(os.environ.get("EVENT_SOURCES", "10"))
    wait_time = constant_throughput(1)

    @task
    def save(self) -> None:
        self.client.post(
            "/v1/system/save",
            json={"path": "load/fanout-probe.txt", "content": str(time.time())},
            headers={"X-API-Key": KEY},
            name="POST /v1/system/save (event source)",
        )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
