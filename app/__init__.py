"""Orket runtime: the API process (`create_app`) and the webhook process
(`create_webhook_app`).

Building an app never starts threads, sweeps runs or checks the databases: that
happens only when a server starts under gunicorn (see `app.serving`). So
`flask --app wsgi orket migrate` works on empty databases.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.config import Settings, load_settings

API_MAX_BODY = 2 * 1024 * 1024
WEBHOOK_MAX_BODY = 1024 * 1024


def _configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_orket", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        handler._orket = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _base_app(settings: Settings, process: str, max_body: int) -> Flask:
    from app.api.errors import register_error_handlers
    from app.services import build_services

    _configure_logging(settings)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=max_body,
        JSON_SORT_KEYS=False,
        DEBUG=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["orket"] = build_services(settings, process)
    register_error_handlers(app)

    @app.before_request
    def _refuse_oversized_bodies() -> None:
        # Refuse by Content-Length before anything reads the body; bodies without a
        # length are cut off by MAX_CONTENT_LENGTH while they are read.
        if request.content_length is not None and request.content_length > max_body:
            raise RequestEntityTooLarge()

    @app.teardown_appcontext
    def _remove_sessions(_exc: BaseException | None) -> None:
        services = app.extensions["orket"]
        services.runtime_db.scoped.remove()
        services.webhook_db.scoped.remove()

    return app


def create_app(settings: Settings | None = None) -> Flask:
    """The API process: `/health`, `/v1/*`, `/metrics`, `/ws/events`."""
    from app.api import register_api
    from app.api.cors import install_cors
    from app.cli import register_cli
    from app.ws import register_ws

    settings = settings or load_settings()
    app = _base_app(settings, "api", API_MAX_BODY)
    install_cors(app, settings)
    register_api(app)
    register_ws(app)
    register_cli(app)
    return app


def create_webhook_app(settings: Settings | None = None) -> Flask:
    """The webhook process: `/`, `/health`, `/webhook/gitea`, `/webhook/test`."""
    from app.api.health import webhook_health
    from app.cli import register_cli
    from app.webhook.routes import register_webhook

    settings = settings or load_settings()
    app = _base_app(settings, "webhook", WEBHOOK_MAX_BODY)
    app.register_blueprint(webhook_health)
    register_webhook(app)
    register_cli(app)
    return app
