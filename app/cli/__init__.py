"""`flask --app wsgi orket <command>` (OPS-2). Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

from flask import Flask
from flask.cli import AppGroup

orket = AppGroup("orket", help="Orket runtime commands.")


def register_cli(app: Flask) -> None:
    # Command modules attach themselves to the `orket` group on import.
    from app.cli import (  # noqa: F401
        engine,
        housekeeping,
        migrate,
        smoke,
        webhook,
    )

    if "orket" not in app.cli.commands:
        app.cli.add_command(orket)
