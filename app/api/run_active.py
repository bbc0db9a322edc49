"""`POST /v1/system/run-active` (API-8): queue a run of an epic, rock or issue.

Working out the target and department, resolving them, the build conflict check and
the insert are `enqueue_run`'s, which the CLI and the webhook policy share; its
errors carry the API status and message.
"""

from __future__ import annotations

from flask import Response, jsonify

from app import runs
from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.api.validation import parse_body
from app.services import current_services


@route(
    v1,
    "/system/run-active",
    "POST",
    "Queue a run of an epic, rock or issue",
    response=schemas.RunQueuedOut,
    status=202,
    body=schemas.RunActiveBody,
    errors=(400, 404, 409),
)
def run_active() -> tuple[Response, int]:
    body = parse_body(schemas.RunActiveBody)
    services = current_services()

    try:
        queued = runs.enqueue_run(
            services.settings,
            services.runtime_db,
            services.events,
            target=body.issue_id,
            type=body.type,
            department=body.department,
            build_id=body.build_id,
            reset=body.reset,
            source="api",
            path=body.path,
        )
    except runs.RunRequestError as exc:
        # TargetNotFound 404, AssetInvalid and BadBuildId 422, RunConflict 409,
        # no target 400.
        raise ApiError(exc.status, exc.detail) from None

    return jsonify(
        {
            "session_id": queued["session_id"],
            "status": queued["status"],
            "build_id": queued["build_id"],
        }
    ), 202
