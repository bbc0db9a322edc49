"""One JSON error shape for both processes (API-3): `{"detail": ...}`.

No response carries a traceback, exception text, secret or host path.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

DEFAULT_DETAILS = {
    400: "Bad Request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """Raise to answer with `status` and `{"detail": detail}`."""

    def __init__(
        self, status: int, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = (
            detail if detail is not None else DEFAULT_DETAILS.get(status, "Error")
        )
        self.headers = headers or {}


def json_error(
    status: int, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body = detail if detail is not None else DEFAULT_DETAILS.get(status, "Error")
    response = jsonify({"detail": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return json_error(error.status, error.detail, error.headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {}
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(sorted(valid_methods))
        return json_error(status, DEFAULT_DETAILS.get(status, error.name), headers)

    @app.errorhandler(Exception)
    def _unhandled(error: Exception) -> Response:
        # The one catch-all: log the traceback for operators, answer without it.
        log.exception("unhandled error")
        events = current_app.extensions.get("orket")
        if events is not None:
            events.events.emit_error("http", error)
        return json_error(500)
