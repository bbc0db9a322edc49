"""Where the load goes: API_URL, WEBHOOK_URL and WS_URL, else the local binds.

Kept free of Locust imports (Locust monkey-patches the process with gevent), so the
harness can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.config import Settings


def target_urls(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """`{"api", "webhook", "ws"}` base URLs; a wildcard bind is reached on loopback."""

    def loopback(host: str) -> str:
        return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host

    api = environ.get("API_URL") or f"http://{loopback(settings.host)}:{settings.port}"
    webhook = environ.get("WEBHOOK_URL") or (
        f"http://{loopback(settings.webhook_host)}:{settings.webhook_port}"
    )
    api = api.rstrip("/")
    ws = environ.get("WS_URL") or (
        api.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        + "/ws/events"
    )
    return {"api": api, "webhook": webhook.rstrip("/"), "ws": ws}
