"""`GET /v1/version`."""

from __future__ import annotations

from flask import Response, jsonify

from app.api.blueprint import v1
from app.services import package_version


@v1.get("/version")
def version() -> Response:
    return jsonify({"version": package_version(), "api": "v1"})
