"""Host ports of sandboxes (SPEC SBX-3).

Ports live on the `sandboxes` row, so the table alone says which are taken, across
restarts and for both processes. A sandbox takes the lowest ports of
`ORKET_SANDBOX_PORT_RANGE` that no live sandbox holds, that are not the servers' own,
and that can be bound right now. Allocation happens under a process lock and inside
one write transaction (`BEGIN IMMEDIATE` on SQLite, an advisory lock on
PostgreSQL), so two jobs can never pick the same port.
"""

from __future__ import annotations

import socket
import threading

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.models.base import utcnow
from app.models.runtime import Sandbox

PORT_COLUMNS = {
    "api": "api_port",
    "frontend": "frontend_port",
    "database": "database_port",
    "admin": "admin_port",
}
RELEASED_STATUSES = ("deleted", "failed")
NO_FREE_PORTS = "No free sandbox ports"
# pg_advisory_xact_lock key of port allocation ("orketSP").
PORTS_LOCK_KEY = 0x6F726B65745350

_allocation_lock = threading.Lock()


class NoFreePorts(Exception):
    def __init__(self) -> None:
        self.detail = NO_FREE_PORTS
        super().__init__(NO_FREE_PORTS)


def row_ports(row: Sandbox) -> dict[str, int | None]:
    return {role: getattr(row, column) for role, column in PORT_COLUMNS.items()}


def release_ports(row: Sandbox) -> None:
    for column in PORT_COLUMNS.values():
        setattr(row, column, None)


def port_is_bindable(port: int) -> bool:
    """Nothing listens on `port` on any interface, as Docker will bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def allocate_ports(
    settings: Settings,
    runtime_db: Database,
    sandbox_id: str,
    roles: tuple[str, ...],
) -> dict[str, int]:
    """Take ports for `roles` and store them on the sandbox row, lowest first."""
    with _allocation_lock, runtime_db.transaction() as session:
        if runtime_db.is_postgresql:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PORTS_LOCK_KEY}
            )
        taken = _held_ports(session, sandbox_id)
        taken.update((settings.port, settings.webhook_port))
        chosen = _lowest_free(settings.sandbox_ports, taken, len(roles))
        row = session.get(Sandbox, sandbox_id)
        if row is None:
            raise LookupError(sandbox_id)
        release_ports(row)
        ports = dict(zip(roles, chosen, strict=True))
        for role, port in ports.items():
            setattr(row, PORT_COLUMNS[role], port)
        row.updated_at = utcnow()
    return ports


def _held_ports(session: Session, sandbox_id: str) -> set[int]:
    columns = [getattr(Sandbox, column) for column in PORT_COLUMNS.values()]
    rows = session.execute(
        select(*columns).where(
            Sandbox.status.not_in(RELEASED_STATUSES), Sandbox.id != sandbox_id
        )
    )
    return {port for row in rows for port in row if port is not None}


def _lowest_free(bounds: tuple[int, int], taken: set[int], count: int) -> list[int]:
    low, high = bounds
    chosen: list[int] = []
    for port in range(low, high + 1):
        if len(chosen) == count:
            break
        if port not in taken and port_is_bindable(port):
            chosen.append(port)
    if len(chosen) < count:
        raise NoFreePorts()
    return chosen
