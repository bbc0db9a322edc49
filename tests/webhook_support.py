"""Helpers shared by the webhook tests: fixture deliveries, re-signing, a Gitea stub,
cards in the runtime database and reading what the webhook stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from app.db import Database
from app.models.base import load_json
from app.models.runtime import Event, Issue
from app.models.webhook import GiteaOutbox, PrReviewCycle, WebhookEvent
from tests.conftest import GITEA_FIXTURES, WEBHOOK_SECRET

API = GITEA_FIXTURES / "api"
REPO = "/api/v1/repos/acme/widgets"
PR_KEY = "acme/widgets#7"
BOT = "orket-bot"
TOKEN = "gitea-token-for-tests"
FIRST_HEAD = "6363d212b3a093ee93f6a68ea93e9cb7345138f0"
SECOND_HEAD = "5d179900a1850d9dc91c4dea25ff9e16c6d09232"
DELIVERY_NAMES = (
    "pr_opened",
    "pr_edited",
    "review_comment",
    "review_rejected",
    "pr_synchronized",
    "pr_comment",
    "pr_closed",
    "pr_reopened",
    "review_approved",
    "pr_merged",
    "push_main",
    "push_test_delivery",
    "forgejo_review_rejected",
)


# Deliveries ---------------------------------------------------------------------------


def fixture_delivery(name: str) -> tuple[dict[str, str], bytes]:
    """Headers and exact body bytes of a delivery in tests/fixtures/gitea."""
    headers = json.loads((GITEA_FIXTURES / f"{name}.headers.json").read_text())
    return headers, (GITEA_FIXTURES / f"{name}.body.json").read_bytes()


def fixture_payload(name: str) -> dict[str, Any]:
    return json.loads((GITEA_FIXTURES / f"{name}.body.json").read_bytes())


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def resign(
    headers: dict[str, str],
    body: bytes,
    *,
    delivery_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
) -> dict[str, str]:
    """A copy of `headers` signed for `body`, with a new delivery id everywhere."""
    signature = sign(body, secret)
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    new_id = delivery_id or str(uuid.uuid4())
    signed = dict(headers)
    for name in list(signed):
        if name.endswith("-Signature") and not name.startswith("X-Hub"):
            signed[name] = signature
        elif name.endswith("-Delivery"):
            signed[name] = new_id
    signed["X-Hub-Signature-256"] = f"sha256={signature}"
    signed["X-Hub-Signature"] = f"sha1={sha1}"
    return signed


def gitea_bytes(payload: dict[str, Any]) -> bytes:
    """Serialised the way Gitea does: two-space indent, no trailing newline."""
    return json.dumps(payload, indent=2).encode()


def variant(
    name: str,
    change: Callable[[dict[str, Any]], None] | None = None,
    *,
    delivery_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A fixture delivery, its payload changed by `change`, re-signed, with a new id."""
    headers, _ = fixture_delivery(name)
    payload = fixture_payload(name)
    if change is not None:
        change(payload)
    body = gitea_bytes(payload)
    return resign(headers, body, delivery_id=delivery_id), body


def rejection(
    reviewer: str = "bob", reason: str = "Please add tests.", number: int = 7
) -> tuple[dict[str, str], bytes]:
    """A request-changes review by `reviewer` on PR #`number`, unique bytes."""

    def change(payload: dict[str, Any]) -> None:
        payload["sender"]["login"] = reviewer
        payload["sender"]["username"] = reviewer
        payload["review"]["content"] = reason
        payload["number"] = number
        payload["pull_request"]["number"] = number

    return variant("review_rejected", change)


def titled(name: str, title: str) -> tuple[dict[str, str], bytes]:
    """A PR delivery whose PR title is `title` (for `ISSUE-...` references)."""

    def change(payload: dict[str, Any]) -> None:
        payload["pull_request"]["title"] = title
        if isinstance(payload.get("issue"), dict):
            payload["issue"]["title"] = title

    return variant(name, change)


def post(client: Any, headers: dict[str, str], body: bytes, **kwargs: Any) -> Any:
    return client.post("/webhook/gitea", data=body, headers=headers, **kwargs)


# Reading what was stored --------------------------------------------------------------


def outbox_rows(webhook_db: Database) -> list[GiteaOutbox]:
    with webhook_db.reader() as session:
        return list(session.scalars(select(GiteaOutbox).order_by(GiteaOutbox.id)))


def delivery_rows(webhook_db: Database) -> list[WebhookEvent]:
    with webhook_db.reader() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def cycle(webhook_db: Database, pr_key: str = PR_KEY) -> PrReviewCycle | None:
    with webhook_db.reader() as session:
        query = select(PrReviewCycle).where(PrReviewCycle.pr_key == pr_key)
        return session.scalars(query).first()


def events_named(runtime_db: Database, name: str) -> list[dict[str, Any]]:
    """`data` of every stored event called `name`, oldest first."""
    with runtime_db.reader() as session:
        query = select(Event).where(Event.event == name).order_by(Event.id)
        return [load_json(row.data, {}) for row in session.scalars(query)]


def event_roles(runtime_db: Database, name: str) -> set[str]:
    with runtime_db.reader() as session:
        return set(session.scalars(select(Event.role).where(Event.event == name)))


# Runtime cards ------------------------------------------------------------------------


def add_card(
    runtime_db: Database,
    card_id: str,
    *,
    status: str = "ready",
    build_id: str = "build-demo",
    epic_id: str | None = None,
) -> None:
    now = datetime.now(timezone.utc)
    with runtime_db.transaction() as session:
        session.add(
            Issue(
                id=card_id,
                build_id=build_id,
                epic_id=epic_id,
                seat="coder",
                summary=f"Card {card_id}",
                status=status,
                created_at=now,
                updated_at=now,
            )
        )


# A Gitea stub -------------------------------------------------------------------------


def api_bytes(name: str) -> bytes:
    return (API / name).read_bytes()


def respond(
    httpserver: Any,
    path: str,
    method: str,
    status: int = 200,
    fixture: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer every `method path` with `status` and a fixture file or JSON body."""
    if fixture is not None:
        data = api_bytes(fixture)
    elif body is not None:
        data = json.dumps(body).encode()
    else:
        data = b""
    httpserver.expect_request(path, method=method).respond_with_data(
        data, status=status, content_type="application/json", headers=headers
    )


def requests_to(httpserver: Any, method: str, path: str) -> list[Request]:
    return [
        request
        for request, _ in httpserver.log
        if request.method == method and request.path == path
    ]


def create_issue_handler(issue_number: int = 12) -> Callable[[Request], Response]:
    """Gitea's issue creation: 422 when labels are names, as real Gitea answers."""

    def handle(request: Request) -> Response:
        payload = json.loads(request.get_data())
        labels = payload.get("labels", [])
        if not all(isinstance(label, int) for label in labels):
            return Response(
                json.dumps({"message": "[Labels]: cannot unmarshal string"}),
                status=422,
                content_type="application/json",
            )
        issue = json.loads(api_bytes("issue_created.json"))
        issue["number"] = issue_number
        issue["title"] = payload["title"]
        return Response(json.dumps(issue), status=201, content_type="application/json")

    return handle


def create_label_handler(first_id: int = 6) -> Callable[[Request], Response]:
    """Gitea's label creation: hands out ids from `first_id` upwards."""
    next_id = [first_id]

    def handle(request: Request) -> Response:
        payload = json.loads(request.get_data())
        label = {
            "id": next_id[0],
            "name": payload["name"],
            "exclusive": False,
            "is_archived": False,
            "color": payload["color"].lstrip("#"),
            "description": payload.get("description", ""),
            "url": f"https://git.example.test{REPO}/labels/{next_id[0]}",
        }
        next_id[0] += 1
        return Response(json.dumps(label), status=201, content_type="application/json")

    return handle


def drain(worker: Any, max_passes: int = 20) -> int:
    """Run outbox passes until nothing is due; returns the rows worked."""
    total = 0
    for _ in range(max_passes):
        worked = worker.run_once()
        total += worked
        if not worked:
            break
    return total
