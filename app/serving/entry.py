"""Build an app for a WSGI entrypoint, turning a settings error into one line."""

from __future__ import annotations

import sys

from flask import Flask

from app.config import SettingsError


def build_or_exit(process: str) -> Flask:
    from app import create_app, create_webhook_app

    try:
        return create_app() if process == "api" else create_webhook_app()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(1) from None
