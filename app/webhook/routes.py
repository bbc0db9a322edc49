"""HTTP side of the webhook process: `/webhook/gitea`, `/webhook/test`, `/metrics`.

`POST /webhook/gitea` runs WH-1's steps strictly in order: size, signature (with the
per-IP failed-signature bucket), the signed-delivery rate limit, parse, validate,
then the policy transaction (dedupe, normalise, decide). Only local database work
happens before the answer; everything owed to Gitea waits in the outbox, so the
answer does not depend on Gitea being up.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.auth import require_api_key
from app.api.errors import ApiError, json_error
from app.models.base import dump_json
from app.services import Services, current_services
from app.webhook.deliveries import (
    InvalidDelivery,
    MalformedPayload,
    body_sha256,
    delivery_id,
    normalise,
    parse_payload,
    validate_delivery,
)
from app.webhook.metrics import webhook_registry
from app.webhook.outbox import ROLE
from app.webhook.policy import Delivery, PolicyResult, ReviewPolicy
from app.webhook.ratelimit import SlidingWindow, WebhookRateLimiter, client_ip
from app.webhook.signatures import (
    MalformedFormBody,
    given_signature,
    signed_bytes,
    verify_signature,
)

log = logging.getLogger(__name__)

EXTENSION = "orket_webhook"
RATE_LIMITED = "Webhook rate limit exceeded"
MALFORMED_JSON = "Invalid payload: malformed JSON"
TEST_TOKEN_HEADER = "X-Orket-Test-Token"

webhook_ingress = Blueprint("webhook_ingress", __name__)
webhook_metrics = Blueprint("webhook_metrics", __name__)


class Ingress:
    """What the delivery routes share within one process: limiters and the policy."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.limiter = WebhookRateLimiter.from_settings(settings)
        self.test_bucket = SlidingWindow(settings.rate_limit, settings.rate_window_sec)
        self.policy = ReviewPolicy(settings, services.webhook_db, services.runtime_db)
        self.gauges: CollectorRegistry = webhook_registry(services.webhook_db)


def register_webhook(app: Flask) -> None:
    """Attach the delivery routes and `/metrics` to the webhook app."""
    app.extensions[EXTENSION] = Ingress(app.extensions["orket"])
    app.register_blueprint(webhook_ingress)
    app.register_blueprint(webhook_metrics)


class DryRunBody(BaseModel):
    """The `/webhook/test` body (WH-11): `event` is the fine-grained type."""

    model_config = ConfigDict(extra="ignore")

    event: str = "test"
    action: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


# POST /webhook/gitea ------------------------------------------------------------------


@webhook_ingress.post("/webhook/gitea")
def receive_delivery() -> tuple[Response, int]:
    ingress = _ingress()
    ip = _client_ip()
    raw = request.get_data(cache=True)  # 413 past 1 MiB, with or without a length
    headers = cast(Mapping[str, str], request.headers)  # looked up case-insensitively

    given = given_signature(headers)
    if given is None:
        return _refuse_signature(ip, "missing_signature", "Missing signature")
    try:
        signed = signed_bytes(raw, request.content_type)
    except MalformedFormBody:
        return _refuse_signature(ip, "bad_signature", "Invalid signature")
    if not verify_signature(ingress.services.settings.webhook_secrets, signed, given):
        return _refuse_signature(ip, "bad_signature", "Invalid signature")

    allowance = ingress.limiter.hit_signed()
    if not allowance.allowed:
        _reject("rate_limited", ip)
        return _too_many(allowance.retry_after)

    try:
        payload = validate_delivery(headers, parse_payload(signed))
    except MalformedPayload:
        _reject("invalid_payload", ip)
        return json_error(400, MALFORMED_JSON), 400
    except InvalidDelivery as exc:
        _reject("invalid_payload", ip)
        return json_error(422, exc.errors), 422

    delivery = Delivery(
        delivery_id(headers, signed),
        body_sha256(signed),
        signed.decode("utf-8", errors="replace"),
        normalise(headers, payload),
    )
    try:
        result = ingress.policy.handle(delivery)
    except Exception as exc:  # noqa: BLE001 - WH-1 step 8: any policy failure is a 500
        return _policy_failed(ingress, delivery, exc)

    _emit_all(result)
    log.info(
        "delivery %s (%s, %s): %s %s",
        delivery.delivery_id,
        delivery.normalised.event_type,
        delivery.normalised.pr_key,
        result.status,
        ",".join(result.actions),
    )
    return jsonify(result.response()), 200


def _refuse_signature(ip: str, reason: str, detail: str) -> tuple[Response, int]:
    """401, or 429 once the IP's failed-signature bucket is full; a full bucket's
    refusals are reported once per IP per window, with their count."""
    allowance = _ingress().limiter.hit_failed_signature(ip)
    if allowance.allowed:
        _reject(reason, ip)
        return json_error(401, detail), 401
    count = _ingress().limiter.refusal_report(ip)
    if count is not None:
        _reject("rate_limited", ip, count=count, level="warning")
    return _too_many(allowance.retry_after)


def _policy_failed(
    ingress: Ingress, delivery: Delivery, exc: Exception
) -> tuple[Response, int]:
    events = ingress.services.events
    log.exception("policy failed for delivery %s", delivery.delivery_id)
    events.emit_error("webhook_policy", exc)
    try:
        ingress.policy.record_failure(delivery, type(exc).__name__)
    except Exception:  # noqa: BLE001 - the database itself may be what failed
        log.exception("could not record failed delivery %s", delivery.delivery_id)
    return json_error(500), 500


# POST /webhook/test -------------------------------------------------------------------


@webhook_ingress.post("/webhook/test")
def dry_run_delivery() -> tuple[Response, int]:
    """WH-11: the policy for a made-up delivery, rolled back but for one row."""
    ingress = _ingress()
    settings = ingress.services.settings
    if not settings.enable_webhook_test_endpoint:
        raise ApiError(404)
    _require_test_token(settings.webhook_test_token)

    allowance = ingress.test_bucket.hit()
    if not allowance.allowed:
        return _too_many(allowance.retry_after)

    try:
        body = DryRunBody.model_validate(parse_payload(request.get_data()))
    except MalformedPayload:
        return json_error(400, MALFORMED_JSON), 400
    except ValidationError as exc:
        return json_error(422, _pydantic_errors(exc)), 422
    payload = dict(body.payload)
    if body.action is not None:
        payload.setdefault("action", body.action)
    headers = {"X-Gitea-Event-Type": body.event}
    try:
        validate_delivery(headers, payload)
    except InvalidDelivery as exc:
        return json_error(422, exc.errors), 422

    signed = dump_json(payload).encode("utf-8")
    delivery = Delivery(
        f"test-{uuid.uuid4()}",
        body_sha256(signed),
        signed.decode("utf-8"),
        normalise(headers, payload),
    )
    result = ingress.policy.dry_run(delivery)
    found = delivery.normalised
    ingress.services.events.emit(
        "delivery_dry_run",
        {
            "delivery_id": delivery.delivery_id,
            "event_type": found.event_type,
            "repo": found.repo_full_name,
            "pr_number": found.pr_number,
            "actions": result.actions,
        },
        role=ROLE,
    )
    return jsonify({**result.response(), "dry_run": True}), 200


def _require_test_token(expected: str | None) -> None:
    given = request.headers.get(TEST_TOKEN_HEADER, "").strip()
    if not given:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    if not given:
        raise ApiError(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "Invalid test token")


def _pydantic_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]


# Shared -------------------------------------------------------------------------------


@webhook_ingress.errorhandler(RequestEntityTooLarge)
def _too_large(_error: RequestEntityTooLarge) -> tuple[Response, int]:
    _reject("too_large", _client_ip())
    return json_error(413, "Payload too large"), 413


def _ingress() -> Ingress:
    return current_app.extensions[EXTENSION]


def _client_ip() -> str:
    return client_ip(
        request.remote_addr,
        request.headers.get("X-Forwarded-For"),
        current_services().settings.trusted_proxies,
    )


def _too_many(retry_after: int) -> tuple[Response, int]:
    return json_error(429, RATE_LIMITED, {"Retry-After": str(retry_after)}), 429


def _reject(reason: str, ip: str, *, level: str = "info", **extra: Any) -> None:
    data = {"reason": reason, "ip": ip, "path": request.path, **extra}
    current_services().events.emit("delivery_rejected", data, role=ROLE, level=level)


def _emit_all(result: PolicyResult) -> None:
    events = current_services().events
    for name, data in result.events:
        events.emit(name, data, role=ROLE)


# GET /metrics -------------------------------------------------------------------------


@webhook_metrics.get("/metrics")
def metrics() -> Response:
    """Prometheus text: deliveries by status, outbox rows by status and kind."""
    services = current_services()
    if not services.settings.api_keys:
        raise ApiError(404)
    require_api_key(services.settings, request)
    text = generate_latest(REGISTRY) + generate_latest(_ingress().gauges)
    return Response(text, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)
