"""The live event stream: a tail of the `events` table and the hub that fans it out.

Every event, from this process or the webhook process, is a row first (EVT-2). The
`EventTail` thread reads rows past its cursor and hands them, in id order, to the
`EventHub`, which only ever `put_nowait`s a pre-serialised frame into each
subscriber's bounded queue (WS-4). Each WebSocket's own thread drains its queue and
sends, so one slow client can never hold up the others: its queue fills, the hub
drops it and its thread closes it with 1013.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.events import event_record
from app.models.runtime import Event

log = logging.getLogger(__name__)

# On PostgreSQL ids come from a sequence and may commit out of order; a hole below
# the newest visible id is waited for this long before the tail passes it (EVT-3).
GAP_WAIT_SEC = 2.0
TAIL_BATCH = 500
REPLAY_PAGE = 500
# A resume asking for more than this many stored events gets `resync` (WS-3).
MAX_REPLAY = 10_000


def cursor_expired(after: int, oldest_id: int | None) -> bool:
    """True when events after `after` are already pruned: `after < oldest − 1`."""
    return oldest_id is not None and after < oldest_id - 1


def polling_needs_resync(after: int, oldest_id: int | None) -> bool:
    """The `resync` flag of `GET /v1/events` (API-4): `0 < after < oldest − 1`."""
    return after > 0 and cursor_expired(after, oldest_id)


def socket_needs_resync(after: int, oldest_id: int | None, last_id: int) -> bool:
    """WS-3: resync, not replay, for a cursor too old, ahead, or too far back."""
    return (
        cursor_expired(after, oldest_id)
        or after > last_id
        or last_id - after > MAX_REPLAY
    )


def oldest_event_id(session: Session) -> int | None:
    return session.scalar(select(func.min(Event.id)))


def newest_event_id(session: Session) -> int | None:
    return session.scalar(select(func.max(Event.id)))


def stored_events(db: Database, after: int, upto: int) -> Iterator[dict[str, Any]]:
    """EVT-1 records with `after < id <= upto` in id order; one session per page."""
    cursor = after
    while cursor < upto:
        with db.reader() as session:
            rows = session.scalars(
                select(Event)
                .where(Event.id > cursor, Event.id <= upto)
                .order_by(Event.id)
                .limit(REPLAY_PAGE)
            ).all()
        if not rows:
            return
        for row in rows:
            yield event_record(row)
        cursor = rows[-1].id


def frame_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Frame:
    """One event ready to send: its id (for resume bookkeeping) and its JSON text."""

    event_id: int
    text: str


def _nothing() -> None:
    return None


@dataclass(eq=False)
class StreamClient:
    """One subscriber: a bounded queue the hub fills and the socket's thread drains.

    `abort` cuts the connection without a goodbye; the hub uses it on a client
    whose thread is stuck sending to a peer that stopped reading.
    """

    queue: queue.Queue[Frame | None]
    abort: Callable[[], None] = _nothing
    too_slow: bool = False
    closing: bool = False

    def wake(self) -> None:
        """Wake the socket's thread now (a `None` in the queue carries no event)."""
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass  # a full queue wakes it anyway


class EventHub:
    """Registry of subscribers; publishes each event to all of them without blocking."""

    def __init__(
        self, *, queue_size: int, max_clients: int, stall_grace_sec: float
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.stall_grace_sec = stall_grace_sec
        self.last_event_id = 0
        self.shutting_down = False
        self._clients: set[StreamClient] = set()
        # Clients dropped for a full queue, with the time by which their own
        # thread should have closed them (1013) before the hub cuts them off.
        self._dropped: dict[StreamClient, float] = {}
        self._lock = threading.Lock()
        self._published = threading.Condition(self._lock)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def start_at(self, last_event_id: int) -> None:
        """Set the id published so far (the tail's starting cursor)."""
        with self._lock:
            self.last_event_id = max(self.last_event_id, last_event_id)

    def subscribe(
        self, abort: Callable[[], None] = _nothing
    ) -> tuple[StreamClient, int] | None:
        """Register a client and read the last published id in one step.

        Every event published after that id reaches the new queue, so a resume can
        replay stored events up to the id and then forward the queue (WS-3).
        Returns None when the socket cap is reached or the hub is shutting down.
        """
        client = StreamClient(queue.Queue(maxsize=self.queue_size), abort)
        with self._lock:
            if self.shutting_down or len(self._clients) >= self.max_clients:
                return None
            self._clients.add(client)
            return client, self.last_event_id

    def unsubscribe(self, client: StreamClient) -> None:
        with self._lock:
            self._clients.discard(client)
            self._dropped.pop(client, None)

    def publish(self, record: dict[str, Any]) -> None:
        """Queue one stored event for every client; a full queue drops that client."""
        frame = Frame(record["id"], frame_text(record))
        with self._lock:
            self.last_event_id = max(self.last_event_id, frame.event_id)
            for client in list(self._clients):
                try:
                    client.queue.put_nowait(frame)
                except queue.Full:
                    client.too_slow = True
                    self._clients.discard(client)
                    self._dropped[client] = time.monotonic() + self.stall_grace_sec
            self._published.notify_all()

    def wait_published(self, event_id: int, timeout: float) -> bool:
        """Wait until the hub has published `event_id`; False on timeout."""
        with self._published:
            return self._published.wait_for(
                lambda: self.last_event_id >= event_id, timeout
            )

    def abort_stalled(self) -> int:
        """Cut off dropped clients whose thread could not close them in time.

        A peer that stops reading leaves its thread blocked in `send`, where it
        cannot send the 1013 close; cutting the connection frees the thread.
        """
        now = time.monotonic()
        with self._lock:
            stalled = [c for c, deadline in self._dropped.items() if deadline <= now]
            for client in stalled:
                del self._dropped[client]
        for client in stalled:
            client.abort()
        return len(stalled)

    def close_all(self) -> None:
        """Ask every socket to close (1001) and refuse new subscribers (PROC-4)."""
        with self._lock:
            self.shutting_down = True
            clients = list(self._clients)
        for client in clients:
            client.closing = True
            client.wake()


class EventTail:
    """The thread that publishes new `events` rows to the hub (EVT-3)."""

    def __init__(self, settings: Settings, db: Database, hub: EventHub) -> None:
        self.db = db
        self.hub = hub
        self.poll_sec = settings.event_poll_ms / 1000
        self.check_gaps = db.is_postgresql
        self.cursor = 0
        self._gap_deadlines: dict[int, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start live from the newest stored event; older ones are for resumes."""
        with self.db.reader() as session:
            self.cursor = newest_event_id(session) or 0
        self.hub.start_at(self.cursor)
        self._thread = threading.Thread(
            target=self._run, name="orket-event-tail", daemon=True
        )
        self._thread.start()

    def wake(self, _record: dict[str, Any] | None = None) -> None:
        """Poll now; an `EventLog` listener, so local emits go out at once."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_sec)
            self._wake.clear()
            self.hub.abort_stalled()
            try:
                if self.poll_once() == TAIL_BATCH:
                    self._wake.set()  # a full batch went out: more may be waiting
            except SQLAlchemyError as exc:
                log.warning("event tail could not read events: %s", type(exc).__name__)

    def poll_once(self) -> int:
        """Publish the rows past the cursor that may pass now; returns how many."""
        with self.db.reader() as session:
            rows = session.scalars(
                select(Event)
                .where(Event.id > self.cursor)
                .order_by(Event.id)
                .limit(TAIL_BATCH)
            ).all()
        now = time.monotonic()
        published = 0
        for row in rows:
            if not self._may_pass(row.id, now):
                break
            self.hub.publish(event_record(row))
            self.cursor = row.id
            published += 1
        self._gap_deadlines = {
            event_id: deadline
            for event_id, deadline in self._gap_deadlines.items()
            if event_id > self.cursor
        }
        return published

    def _may_pass(self, event_id: int, now: float) -> bool:
        """False while a hole just below `event_id` may still be filled by a commit."""
        if not self.check_gaps or event_id == self.cursor + 1:
            return True
        deadline = self._gap_deadlines.setdefault(event_id, now + GAP_WAIT_SEC)
        return now >= deadline
