"""HTTP API of the runtime process: `/health`, `/v1/*`, JSON errors, auth and CORS."""

from __future__ import annotations

from flask import Flask

from app.api import version  # noqa: F401 - registers its routes on the blueprint
from app.api.blueprint import v1
from app.api.health import api_health


def register_api(app: Flask) -> None:
    app.register_blueprint(api_health)
    app.register_blueprint(v1)
