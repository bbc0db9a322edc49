"""`/ws/events`: the event stream over a WebSocket (WS-1..WS-4), with flask-sock.

The handshake is checked in a before-request hook, before the upgrade, so refusals
are ordinary JSON responses. After the upgrade each socket's thread sends `hello`,
replays stored events when the client resumes, then forwards what the hub queues.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any, cast

from flask import Blueprint, Flask, g, request
from flask_sock import Sock
from pydantic import BaseModel, Field
from simple_websocket import ConnectionClosed, Server
from wsproto.utilities import LocalProtocolError

from app.api.auth import require_api_key
from app.api.errors import ApiError
from app.api.validation import parse_query
from app.db import Database
from app.metrics import WS_CLIENTS
from app.services import Services, current_services
from app.stream import (
    GAP_WAIT_SEC,
    EventHub,
    StreamClient,
    frame_text,
    newest_event_id,
    oldest_event_id,
    socket_needs_resync,
    stored_events,
)

MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
# Longest wait for the tail to publish a stored resume cursor (PostgreSQL may
# hold an id back for GAP_WAIT_SEC).
CATCH_UP_SEC = GAP_WAIT_SEC + 0.5
# How long a peer has to answer our close frame before it is cut off.
CLOSE_REPLY_SEC = 1.0

ws_events = Blueprint("ws_events", __name__)
sock = Sock()


class _ReaderThread(threading.Thread):
    """simple-websocket's per-connection reader, as a daemon that reports its end.

    As a non-daemon thread it could hold the worker process open on exit. When it
    ends (the peer closed, vanished or missed a pong) it calls the connection's
    `on_reader_exit`, so the socket's own thread notices at once instead of at its
    next wake-up.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)

    def run(self) -> None:
        # `_target` is the connection's bound `_thread` method.
        target = self._target  # type: ignore[attr-defined]
        connection = getattr(target, "__self__", None)
        try:
            super().run()
        finally:
            on_exit = getattr(connection, "on_reader_exit", None)
            if on_exit is not None:
                on_exit()


class SocketQuery(BaseModel):
    after: int | None = Field(default=None, ge=0, le=2**63 - 1)


def event_hub(services: Services) -> EventHub:
    """The hub `register_ws` gave this process."""
    return cast(EventHub, services.extras["event_hub"])


def register_ws(app: Flask) -> None:
    """Add `/ws/events` and the process's event hub to the API app."""
    services: Services = app.extensions["orket"]
    settings = services.settings
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": settings.ws_ping_sec,
        "max_message_size": MAX_MESSAGE_BYTES,
        "thread_class": _ReaderThread,
    }
    services.extras["event_hub"] = EventHub(
        queue_size=settings.ws_queue,
        max_clients=settings.ws_max_clients,
        stall_grace_sec=settings.ws_ping_sec,
    )
    app.register_blueprint(ws_events)


@ws_events.before_request
def _check_handshake() -> None:
    """WS-1: key (header or `api_key` query), then `Origin`, then `after`."""
    settings = current_services().settings
    require_api_key(settings, request, allow_query=True)
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in settings.allowed_origins:
        raise ApiError(403, "Origin not allowed")
    g.ws_after = parse_query(SocketQuery).after


@sock.route("/ws/events", bp=ws_events)
def events_socket(ws: Server) -> None:
    services = current_services()
    hub = event_hub(services)
    after: int | None = g.ws_after
    if after is not None and after > hub.last_event_id:
        _let_the_tail_catch_up(services, hub, after)
    subscription = hub.subscribe(abort=lambda: _cut_connection(ws))
    if subscription is None:
        if hub.shutting_down:
            close_and_wait(ws, CLOSE_GOING_AWAY, "Server shutting down")
        else:
            close_and_wait(ws, CLOSE_TRY_AGAIN_LATER, "Too many clients")
        return
    client, last_id = subscription
    ws.on_reader_exit = client.wake  # type: ignore[attr-defined]
    WS_CLIENTS.inc()
    try:
        stream = SocketStream(
            ws, client, services.runtime_db, services.settings.ws_ping_sec
        )
        stream.serve(last_id, after)
    except (ConnectionClosed, LocalProtocolError, OSError):
        pass  # the client went away or is closing; nothing more is owed to it
    finally:
        hub.unsubscribe(client)
        WS_CLIENTS.dec()


def _let_the_tail_catch_up(services: Services, hub: EventHub, after: int) -> None:
    """A cursor the tail has not published yet but that is stored (say, from
    `/v1/events`) is about to be published: wait for it rather than resync."""
    with services.runtime_db.reader() as session:
        newest = newest_event_id(session) or 0
    if after <= newest:
        hub.wait_published(after, CATCH_UP_SEC)


def close_and_wait(ws: Server, code: int, reason: str) -> None:
    """Send a close frame, then give the peer a moment to answer it.

    gunicorn closes a finished connection gracefully on its main loop, waiting up
    to 2 s for the peer's FIN; a socket we closed but the peer did not would stall
    every other connection that long. So the peer's answer is awaited here, on
    this socket's own thread, and a peer that does not answer is cut off.
    """
    try:
        ws.close(code, reason)
    except (ConnectionClosed, LocalProtocolError, OSError):
        return
    ws.thread.join(CLOSE_REPLY_SEC)
    if ws.thread.is_alive():
        _cut_connection(ws)


def _cut_connection(ws: Server) -> None:
    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class SocketStream:
    """What one socket sends: hello, a resume, then live frames and pings."""

    def __init__(
        self, ws: Server, client: StreamClient, db: Database, ping_sec: float
    ) -> None:
        self.ws = ws
        self.client = client
        self.db = db
        self.ping_sec = ping_sec
        self.last_sent_id = 0
        self.last_send_at = time.monotonic()

    def serve(self, last_id: int, after: int | None) -> None:
        self.send({"type": "hello", "last_event_id": last_id})
        if after is not None:
            self.resume(after, last_id)
        self.forward_live()

    def resume(self, after: int, last_id: int) -> None:
        """Replay stored events `after < id <= last_id`, or say `resync` (WS-3)."""
        with self.db.reader() as session:
            oldest = oldest_event_id(session)
        if socket_needs_resync(after, oldest, last_id):
            self.send(
                {"type": "resync", "oldest_event_id": oldest, "last_event_id": last_id}
            )
            return
        for record in stored_events(self.db, after, last_id):
            self.send_event(record["id"], frame_text(record))

    def forward_live(self) -> None:
        while True:
            self.discard_client_frames()
            if self.client.closing:
                close_and_wait(self.ws, CLOSE_GOING_AWAY, "Server shutting down")
                return
            if self.client.too_slow:
                close_and_wait(self.ws, CLOSE_TRY_AGAIN_LATER, "Client too slow")
                return
            ping_due_in = self.last_send_at + self.ping_sec - time.monotonic()
            try:
                frame = self.client.queue.get(timeout=max(0.0, ping_due_in))
            except queue.Empty:
                frame = None
            if frame is not None:
                self.send_event(frame.event_id, frame.text)
            elif time.monotonic() - self.last_send_at >= self.ping_sec:
                self.send({"type": "ping"})

    def discard_client_frames(self) -> None:
        """Read and drop whatever the client sent; raises once the socket is closed."""
        while self.ws.receive(timeout=0) is not None:
            pass

    def send_event(self, event_id: int, text: str) -> None:
        # Replay and live queue overlap by design; never send an id twice.
        if event_id <= self.last_sent_id:
            return
        self._send_text(text)
        self.last_sent_id = event_id

    def send(self, payload: dict[str, Any]) -> None:
        self._send_text(frame_text(payload))

    def _send_text(self, text: str) -> None:
        self.ws.send(text)
        self.last_send_at = time.monotonic()
