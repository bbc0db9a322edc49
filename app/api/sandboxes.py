"""`/v1/sandboxes`: list, stop and logs of sandboxes (API-4, SBX-2, SBX-5)."""

from __future__ import annotations

from flask import Response, jsonify

from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_query
from app.models.runtime import Sandbox
from app.sandbox import (
    STOPPABLE_STATUSES,
    DockerEngineUnavailable,
    SandboxJobConflict,
    SandboxLogsTimeout,
    SandboxNotFound,
    UnknownSandboxService,
    enqueue_sandbox_job,
    list_sandboxes,
    sandbox_logs,
    sandbox_to_dict,
)
from app.services import current_services


@route(
    v1,
    "/sandboxes",
    "GET",
    "Sandboxes, newest first; deleted ones only with all=true",
    response=schemas.SandboxOut,
    many=True,
    query=schemas.SandboxListQuery,
)
def get_sandboxes() -> Response:
    query = parse_query(schemas.SandboxListQuery)
    with current_services().runtime_db.reader() as session:
        rows = list_sandboxes(session, include_deleted=query.all)
        return jsonify([sandbox_to_dict(row) for row in rows])


@route(
    v1,
    "/sandboxes/<sandbox_id>/stop",
    "POST",
    "Queue a job that stops and deletes the sandbox",
    response=schemas.SandboxStopOut,
    status=202,
    errors=(404, 409),
)
def stop_sandbox(sandbox_id: str) -> tuple[Response, int]:
    services = current_services()
    with services.runtime_db.reader() as session:
        row = session.get(Sandbox, sandbox_id)
    if row is None:
        raise ApiError(404)
    if row.status not in STOPPABLE_STATUSES:
        raise ApiError(409, "Sandbox is not running")
    try:
        job = enqueue_sandbox_job(
            services.runtime_db,
            services.events,
            kind="sandbox_stop",
            sandbox_id=sandbox_id,
            params={},
            source="api",
        )
    except SandboxJobConflict as conflict:
        raise ApiError(409, conflict.detail) from None
    return jsonify({"ok": True, "job_id": job["session_id"], "status": "queued"}), 202


@route(
    v1,
    "/sandboxes/<sandbox_id>/logs",
    "GET",
    "The last 100 log lines of the sandbox or of one of its services",
    response=schemas.SandboxLogsOut,
    query=schemas.SandboxLogsQuery,
    errors=(404, 422, 503, 504),
)
def get_sandbox_logs(sandbox_id: str) -> Response:
    query = parse_query(schemas.SandboxLogsQuery)
    services = current_services()
    try:
        logs = sandbox_logs(services, sandbox_id, query.service)
    except SandboxNotFound:
        raise ApiError(404) from None
    except UnknownSandboxService as unknown:
        raise ApiError(
            422,
            [
                {
                    "loc": ["query", "service"],
                    "msg": unknown.detail,
                    "type": "value_error",
                }
            ],
        ) from None
    except DockerEngineUnavailable as exc:
        raise ApiError(503, exc.detail) from None
    except SandboxLogsTimeout as exc:
        raise ApiError(504, exc.detail) from None
    return jsonify({"logs": logs})
