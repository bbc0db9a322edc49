"""Webhook load users: `/webhook/test` dry runs and signed Gitea-shaped deliveries.

`WebhookDryRunUser` (scenario `webhook`) posts dry runs with the test token.
`WebhookSignedUser` (scenario `webhook_signed`) sends real deliveries through the
signature check, the rate limiter, dedupe and the review-cycle policy: in turn a PR
opened without an issue reference (ignored), a comment review (ignored) and a
request-changes review (accepted, one rejection counted). Every delivery has a new
id and its own PR number under a repository named for the run, so none is a
duplicate of another or of an earlier run. Run the receiver with
`ORKET_RATE_LIMIT=1000`: 429s count as failures.
"""

from __future__ import annotations

from typing import Any

from locust import HttpUser, constant, task
from locust.exception import StopUser

from app.cli.gitea_samples import pull_request_payload, signed_delivery
from locustfiles.common import QUOTA, default_urls, run_stamp, settings

SETTINGS = settings()
URLS = default_urls(SETTINGS)
STAMP = run_stamp()

# kind, expected response status, review text
SIGNED_ROTATION = (
    ("pr_opened", "ignored", ""),
    ("review_comment", "ignored", "Two questions inline; nothing blocking."),
    ("review_rejected", "accepted", "Please add a test for the empty input."),
)


def delivery_payload(kind: str, ticket: int, review_text: str) -> dict[str, Any]:
    return pull_request_payload(
        kind,
        owner="orket-load",
        repo=f"load-{STAMP}".lower(),
        number=ticket + 1,
        title=f"Load run change {ticket + 1}",
        review_text=review_text,
    )


class WebhookDryRunUser(HttpUser):
    """POST /webhook/test: the whole pipeline as a dry run (needs the test token)."""

    host = URLS["webhook"]
    wait_time = constant(0)

    @task
    def dry_run(self) -> None:
        ticket = QUOTA.take()
        if ticket is None:
            raise StopUser()
        payload = delivery_payload("pr_opened", ticket, "")
        with self.client.post(
            "/webhook/test",
            json={"event": "pull_request", "action": "opened", "payload": payload},
            headers={"X-Orket-Test-Token": SETTINGS.webhook_test_token or ""},
            name="POST /webhook/test",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif response.json().get("dry_run") is not True:
                response.failure("answer is not a dry run")
            else:
                response.success()
        QUOTA.finish(self.environment)


class WebhookSignedUser(HttpUser):
    """POST /webhook/gitea with signed deliveries that go through the real policy."""

    host = URLS["webhook"]
    wait_time = constant(0)

    @task
    def deliver(self) -> None:
        ticket = QUOTA.take()
        if ticket is None:
            raise StopUser()
        kind, expected, review_text = SIGNED_ROTATION[ticket % len(SIGNED_ROTATION)]
        payload = delivery_payload(kind, ticket, review_text)
        delivery = signed_delivery(kind, payload, SETTINGS.webhook_secret or "")
        with self.client.post(
            "/webhook/gitea",
            data=delivery.body,
            headers=delivery.headers,
            name=f"POST /webhook/gitea [{kind}]",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif (status := response.json().get("status")) != expected:
                response.failure(f"status {status}, expected {expected}")
            else:
                response.success()
        QUOTA.finish(self.environment)
