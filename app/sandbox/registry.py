"""The `sandboxes` table as the API shows it (SPEC SBX-2).

The table is the only registry: both processes write it, the API lists it. The API
object never carries a password, the `.env` file or a host path (`work_dir`); the
database URL shows its password as `***`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.base import isoformat
from app.models.runtime import Sandbox
from app.sandbox.ports import row_ports
from app.sandbox.stacks import STACKS

STOPPABLE_STATUSES = ("running", "unhealthy", "creating")
CHECKED_STATUSES = ("running", "unhealthy")


def sandbox_urls(row: Sandbox) -> dict[str, str | None]:
    """`api_url`, `frontend_url`, `admin_url` and the masked `database_url`."""
    host = row.public_host or "localhost"
    ports = row_ports(row)

    def url(port: int | None) -> str | None:
        return f"http://{host}:{port}" if port is not None else None

    stack = STACKS.get(row.tech_stack)
    database = ports["database"]
    return {
        "api_url": url(ports["api"]),
        "frontend_url": url(ports["frontend"]),
        "admin_url": url(ports["admin"]),
        "database_url": (
            stack.masked_database_url(host, database)
            if stack is not None and database is not None
            else None
        ),
    }


def sandbox_to_dict(row: Sandbox) -> dict[str, Any]:
    """The SBX-2 API object of a row."""
    ports = row_ports(row)
    return {
        "id": row.id,
        "rock_id": row.rock_id,
        "project_name": row.project_name,
        "tech_stack": row.tech_stack,
        "status": row.status,
        "ports": {
            "api": ports["api"],
            "frontend": ports["frontend"],
            "database": ports["database"],
            "admin_tool": ports["admin"],
        },
        "compose_project": row.compose_project,
        **sandbox_urls(row),
        "created_at": isoformat(row.created_at),
        "deployed_at": isoformat(row.deployed_at),
        "deleted_at": isoformat(row.deleted_at),
        "last_error": row.last_error,
        "health_checks_passed": row.health_checks_passed,
        "health_checks_failed": row.health_checks_failed,
    }


def list_sandboxes(session: Session, *, include_deleted: bool = False) -> list[Sandbox]:
    """Newest first; `deleted` rows only when asked for."""
    query = select(Sandbox).order_by(Sandbox.created_at.desc(), Sandbox.id)
    if not include_deleted:
        query = query.where(Sandbox.status != "deleted")
    return list(session.scalars(query))
