"""HTTP API of the runtime process: `/health`, `/v1/*`, `/metrics`, JSON errors,
auth and CORS.

Route modules register their views on the `/v1` blueprint when imported, and
describe them for `/v1/openapi.json` in the same step.
"""

from __future__ import annotations

from flask import Flask

from app.api import (  # noqa: F401 - each module registers its routes on the blueprint
    board,
    cards,
    driver,
    events_routes,
    files,
    openapi,
    run_active,
    runs,
    sandboxes,
    system,
    version,
)
from app.api.blueprint import v1
from app.api.health import api_health
from app.api.metrics_routes import install_metrics


def register_api(app: Flask) -> None:
    app.register_blueprint(api_health)
    app.register_blueprint(v1)
    install_metrics(app)
