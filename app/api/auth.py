"""The API key check (API-1) and the keyless loopback development guard (SEC-1)."""

from __future__ import annotations

import hmac

from flask import Request

from app.api.errors import ApiError
from app.config import Settings, is_loopback_host


def presented_key(request: Request, *, allow_query: bool = False) -> str | None:
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:
        return request.args.get("api_key", "").strip() or None
    return None


def key_matches(settings: Settings, key: str) -> bool:
    """Constant-time comparison against the current and the previous key."""
    matched = False
    for expected in settings.api_keys:
        matched |= hmac.compare_digest(key.encode(), expected.encode())
    return matched


def require_api_key(
    settings: Settings, request: Request, *, allow_query: bool = False
) -> None:
    """Raise 401/403 unless the request carries a valid key (or dev mode allows it)."""
    if not settings.api_keys:
        _require_dev_request(settings, request)
        return
    key = presented_key(request, allow_query=allow_query)
    if key is None:
        raise ApiError(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
    if not key_matches(settings, key):
        raise ApiError(403, "Could not validate credentials")


def _require_dev_request(settings: Settings, request: Request) -> None:
    """Keyless development: loopback `Host`s only; POSTs only from allowed origins."""
    if not is_loopback_host(_host_name(request.host)):
        raise ApiError(403, "Forbidden")
    origin = request.headers.get("Origin")
    if (
        request.method == "POST"
        and origin
        and origin.rstrip("/") not in settings.allowed_origins
    ):
        raise ApiError(403, "Forbidden")


def _host_name(host: str) -> str:
    """The name part of a `Host` header: `[::1]:8082` → `::1`, `a:1` → `a`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
