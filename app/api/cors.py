"""CORS with exact-match origins (API-2)."""

from __future__ import annotations

from flask import Flask, Request, Response, request

from app.config import Settings

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Content-Type, Authorization, X-API-Key"


def origin_allowed(settings: Settings, req: Request) -> bool:
    origin = req.headers.get("Origin")
    return origin is not None and origin.rstrip("/") in settings.allowed_origins


def is_preflight(req: Request) -> bool:
    return req.method == "OPTIONS" and "Access-Control-Request-Method" in req.headers


def install_cors(app: Flask, settings: Settings) -> None:
    @app.after_request
    def _add_cors_headers(response: Response) -> Response:
        response.vary.add("Origin")
        if origin_allowed(settings, request):
            response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        return response
