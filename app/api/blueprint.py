"""The `/v1` blueprint: every route behind the API key (API-1)."""

from __future__ import annotations

from flask import Blueprint, request

from app.api.auth import require_api_key
from app.services import current_services

v1 = Blueprint("v1", __name__, url_prefix="/v1")


@v1.before_request
def _authenticate() -> None:
    if request.method == "OPTIONS":
        return
    require_api_key(current_services().settings, request)
