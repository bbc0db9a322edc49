"""`/health` of both processes (PROC-5) and the webhook process's `/`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.services import current_services, package_version

api_health = Blueprint("api_health", __name__)
webhook_health = Blueprint("webhook_health", __name__)

HEALTH_TIMEOUT_SEC = 2.0


def _check(ok: bool) -> str:
    return "ok" if ok else "error"


@api_health.get("/health")
def health() -> tuple[Response, int]:
    services = current_services()
    checks = {"runtime_db": _check(services.runtime_db.ping(HEALTH_TIMEOUT_SEC))}
    if "error" in checks.values():
        return jsonify({"status": "unavailable", "checks": checks}), 503
    org = services.extras.get("organization_name", "Orket")
    return jsonify({"status": "ok", "organization": org, "checks": checks}), 200


@webhook_health.get("/health")
def webhook_health_check() -> tuple[Response, int]:
    services = current_services()
    checks = {
        "webhook_db": _check(services.webhook_db.ping(HEALTH_TIMEOUT_SEC)),
        "runtime_db": _check(services.runtime_db.ping(HEALTH_TIMEOUT_SEC)),
        "gitea_credentials": (
            "configured"
            if services.settings.gitea_credentials_configured
            else "missing"
        ),
    }
    if "error" in (checks["webhook_db"], checks["runtime_db"]):
        return jsonify({"status": "unavailable", "checks": checks}), 503
    return jsonify({"status": "healthy", "checks": checks}), 200


@webhook_health.get("/")
def webhook_root() -> Response:
    return jsonify(
        {
            "service": "Orket Webhook Server",
            "status": "running",
            "version": package_version(),
        }
    )
