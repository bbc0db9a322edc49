"""API and WebSocket load users: heartbeat, epic triggers, `/ws/events` connects.

`HeartbeatUser` (scenario `api_heartbeat`) reads the heartbeat with the key.
`EpicTriggerUser` (scenario `parallel_epic_trigger`) queues the packaged demo epic on
its own build `load-<stamp>-<n>`; the API answers 202 and its job runner really runs
them, `ORKET_MAX_RUNS` at a time. `WebSocketUser` (scenario `websocket_connect`)
connects with the key and counts the time until the `hello` frame.
"""

from __future__ import annotations

import json
import time

import websocket
from locust import HttpUser, User, constant, events, task
from locust.exception import StopUser

from locustfiles.common import DEMO_EPIC_PATH, QUOTA, default_urls, run_stamp, settings

SETTINGS = settings()
URLS = default_urls(SETTINGS)
STAMP = run_stamp()
KEY_HEADERS = {"X-API-Key": SETTINGS.api_key or ""}


class HeartbeatUser(HttpUser):
    host = URLS["api"]
    wait_time = constant(0)

    @task
    def heartbeat(self) -> None:
        if QUOTA.take() is None:
            raise StopUser()
        with self.client.get(
            "/v1/system/heartbeat",
            headers=KEY_HEADERS,
            name="GET /v1/system/heartbeat",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif response.json().get("status") != "online":
                response.failure("heartbeat is not online")
            else:
                response.success()
        QUOTA.finish(self.environment)


class EpicTriggerUser(HttpUser):
    host = URLS["api"]
    wait_time = constant(0)

    @task
    def trigger(self) -> None:
        ticket = QUOTA.take()
        if ticket is None:
            raise StopUser()
        build_id = f"load-{STAMP}-{ticket}"
        with self.client.post(
            "/v1/system/run-active",
            json={"path": DEMO_EPIC_PATH, "build_id": build_id},
            headers=KEY_HEADERS,
            name="POST /v1/system/run-active",
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"HTTP {response.status_code}: {response.text[:120]}")
            elif response.json().get("build_id") != build_id:
                response.failure("answer names another build")
            else:
                response.success()
        QUOTA.finish(self.environment)


class WebSocketUser(User):
    """Connects to /ws/events and waits for `hello`; reported as request type WS."""

    host = URLS["ws"]
    wait_time = constant(0)

    @task
    def connect_until_hello(self) -> None:
        if QUOTA.take() is None:
            raise StopUser()
        started = time.perf_counter()
        error: Exception | None = None
        ws = None
        try:
            ws = websocket.create_connection(
                URLS["ws"],
                header=[f"X-API-Key: {SETTINGS.api_key or ''}"],
                timeout=10,
                suppress_origin=True,  # not a browser: send no Origin header
            )
            frame = json.loads(ws.recv())
            if frame.get("type") != "hello":
                raise ValueError(f"first frame {frame.get('type')!r}, not hello")
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            error = exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        if ws is not None:
            ws.close()
        events.request.fire(
            request_type="WS",
            name="/ws/events connect until hello",
            response_time=elapsed_ms,
            response_length=0,
            exception=error,
            context={},
        )
        QUOTA.finish(self.environment)
