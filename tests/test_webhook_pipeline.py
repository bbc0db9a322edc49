"""`POST /webhook/gitea` step by step (WH-1..WH-6), `/webhook/test` (WH-11) and the
webhook `/metrics`."""

import io
import json
import socket
import threading
import time
from urllib.parse import quote_plus

import pytest
from sqlalchemy import select

from app.models.webhook import ReviewFailure
from app.webhook.outbox import OutboxWorker
from app.webhook.policy import ReviewPolicy
from tests.conftest import API_KEY, WEBHOOK_SECRET
from tests.webhook_support import (
    DELIVERY_NAMES,
    PR_KEY,
    SECOND_HEAD,
    cycle,
    delivery_rows,
    event_roles,
    events_named,
    fixture_delivery,
    fixture_payload,
    outbox_rows,
    post,
    rejection,
    resign,
    sign,
    variant,
)

MIB = 1024 * 1024
VECTOR_SECRET = "example-webhook-secret"
VECTOR_BODY = b'{"action":"synchronized","number":7}'
VECTOR_SIGNATURE = "dc16a37330593bd66f4b58b0a1d28aecac076a50871d5e94bc3de9570edccfd9"


@pytest.fixture
def make_app(make_webhook_app):
    return make_webhook_app


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def services(app):
    return app.extensions["orket"]


def rejected_reasons(services):
    return [
        data["reason"]
        for data in events_named(services.runtime_db, "delivery_rejected")
    ]


# WH-2 signatures ----------------------------------------------------------------------


def test_spec_test_vector_matches_our_hmac():
    assert sign(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE


@pytest.mark.parametrize(
    "header, value",
    [
        ("X-Gitea-Signature", VECTOR_SIGNATURE),
        ("X-Forgejo-Signature", VECTOR_SIGNATURE),
        ("X-Hub-Signature-256", f"sha256={VECTOR_SIGNATURE}"),
        ("X-Gitea-Signature", VECTOR_SIGNATURE.upper()),
    ],
)
def test_test_vector_is_accepted_through_each_signature_header(make_app, header, value):
    client = make_app(webhook_secret=VECTOR_SECRET).test_client()

    response = client.post(
        "/webhook/gitea",
        data=VECTOR_BODY,
        headers={"Content-Type": "application/json", header: value},
    )

    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert response.json["delivery_id"].startswith("sha256:")


def test_previous_secret_is_accepted_during_rotation(make_app):
    client = make_app(
        webhook_secret="new-secret", webhook_secret_previous=VECTOR_SECRET
    ).test_client()

    response = client.post(
        "/webhook/gitea",
        data=VECTOR_BODY,
        headers={"X-Gitea-Signature": VECTOR_SIGNATURE},
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Gitea-Signature": ""},
        {"X-Gitea-Signature": "", "X-Hub-Signature-256": "sha256="},
        {"X-Forgejo-Signature": "  ", "X-Hub-Signature-256": "sha256="},
    ],
    ids=["none", "empty", "empty-with-bare-prefix", "blank-forgejo"],
)
def test_missing_or_empty_signature_is_401_missing(client, services, headers):
    response = client.post("/webhook/gitea", data=VECTOR_BODY, headers=headers)

    assert response.status_code == 401
    assert response.json == {"detail": "Missing signature"}
    assert rejected_reasons(services) == ["missing_signature"]


def test_wrong_signature_is_401_invalid(client, services):
    headers, body = fixture_delivery("review_rejected")

    response = post(client, headers, body + b" ")

    assert response.status_code == 401
    assert response.json == {"detail": "Invalid signature"}
    assert rejected_reasons(services) == ["bad_signature"]
    assert delivery_rows(services.webhook_db) == []


def test_secret_inside_the_body_is_not_trusted(client):
    body = json.dumps({"action": "opened", "secret": WEBHOOK_SECRET}).encode()

    response = client.post(
        "/webhook/gitea", data=body, headers={"X-Gitea-Signature": "0" * 64}
    )

    assert response.status_code == 401


def test_form_delivery_is_verified_over_the_inner_json(client):
    headers, body = fixture_delivery("review_rejected")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    form = b"payload=" + quote_plus(body.decode()).encode()

    response = post(client, headers, form)

    assert response.status_code == 200
    assert response.json["event"] == "review_rejected"
    assert response.json["status"] == "accepted"


def test_form_delivery_signed_over_the_form_body_is_refused(client):
    headers, body = fixture_delivery("review_rejected")
    form = b"payload=" + quote_plus(body.decode()).encode()
    headers = resign(headers, form)
    headers["Content-Type"] = "application/x-www-form-urlencoded"

    response = post(client, headers, form)

    assert response.status_code == 401
    assert response.json == {"detail": "Invalid signature"}


# WH-1 step 1: size --------------------------------------------------------------------


def padded_body(size):
    """A JSON object of exactly `size` bytes."""
    skeleton = b'{"action":"opened","pad":""}'
    return skeleton[:-2] + b"x" * (size - len(skeleton)) + skeleton[-2:]


def test_body_of_exactly_one_mib_passes(client):
    body = padded_body(MIB)
    assert len(body) == MIB

    response = client.post(
        "/webhook/gitea", data=body, headers={"X-Gitea-Signature": sign(body)}
    )

    assert response.status_code == 200


def test_body_one_byte_over_one_mib_is_413(client, services):
    body = padded_body(MIB + 1)

    response = client.post(
        "/webhook/gitea", data=body, headers={"X-Gitea-Signature": sign(body)}
    )

    assert response.status_code == 413
    assert response.json == {"detail": "Payload too large"}
    assert rejected_reasons(services) == ["too_large"]


@pytest.mark.parametrize("size, status", [(MIB, 200), (MIB + 1, 413)])
def test_body_without_content_length_is_cut_at_one_mib(client, size, status):
    body = padded_body(size)

    response = client.post(
        "/webhook/gitea",
        input_stream=io.BytesIO(body),
        headers={"X-Gitea-Signature": sign(body)},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == status


# WH-3 rate limits ---------------------------------------------------------------------


def test_signed_deliveries_over_the_limit_get_429_with_retry_after(make_app):
    client = make_app(rate_limit=2).test_client()
    answers = [post(client, *rejection(number=n)) for n in (1, 2, 3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].json == {"detail": "Webhook rate limit exceeded"}
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60


def test_forged_flood_from_one_ip_does_not_stop_signed_deliveries(make_app):
    app = make_app(rate_limit=5, unsigned_rate_limit=3)
    client = app.test_client()
    services = app.extensions["orket"]
    forged_headers, forged_body = fixture_delivery("review_rejected")
    forged_headers = {**forged_headers, "X-Gitea-Signature": "f" * 64}

    forged = [post(client, forged_headers, forged_body).status_code for _ in range(40)]
    signed = [post(client, *rejection(number=n)).status_code for n in range(1, 6)]

    assert forged[:3] == [401, 401, 401]
    assert set(forged[3:]) == {429}
    assert signed == [200] * 5
    reasons = rejected_reasons(services)
    assert reasons.count("bad_signature") == 3
    # The 37 refusals of a full bucket are one aggregated event, not 37 rows.
    aggregated = [
        data
        for data in events_named(services.runtime_db, "delivery_rejected")
        if data["reason"] == "rate_limited"
    ]
    assert len(aggregated) == 1
    assert aggregated[0]["ip"] == "127.0.0.1"
    assert aggregated[0]["count"] == 1


def test_failed_signature_buckets_are_per_ip(make_app):
    client = make_app(unsigned_rate_limit=1).test_client()
    headers = {"X-Gitea-Signature": "0" * 64}

    first = client.post(
        "/webhook/gitea",
        data=b"{}",
        headers=headers,
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    second = client.post(
        "/webhook/gitea",
        data=b"{}",
        headers=headers,
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    other_ip = client.post(
        "/webhook/gitea",
        data=b"{}",
        headers=headers,
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )

    assert (first.status_code, second.status_code, other_ip.status_code) == (
        401,
        429,
        401,
    )


# WH-1 steps 4-5: parse and validate ---------------------------------------------------


def test_signed_body_that_is_not_json_is_400(client, services):
    body = b"{not json"

    response = client.post(
        "/webhook/gitea", data=body, headers={"X-Gitea-Signature": sign(body)}
    )

    assert response.status_code == 400
    assert response.json == {"detail": "Invalid payload: malformed JSON"}
    assert rejected_reasons(services) == ["invalid_payload"]


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update(number="7"),
        lambda p: p.update(repository=None),
        lambda p: p.update(review="looks bad"),
        lambda p: p.update(number=0),
    ],
    ids=["number-as-string", "no-repository", "review-not-object", "number-zero"],
)
def test_pull_request_delivery_breaking_wh4_is_422(client, change):
    response = post(client, *variant("review_rejected", change))

    assert response.status_code == 422
    assert isinstance(response.json["detail"], list)
    assert response.json["detail"][0]["loc"][0] == "body"


def test_json_that_is_not_an_object_is_422(client):
    body = b"[1, 2]"

    response = client.post(
        "/webhook/gitea", data=body, headers={"X-Gitea-Signature": sign(body)}
    )

    assert response.status_code == 422


# WH-5 dedupe --------------------------------------------------------------------------


def test_redelivery_with_the_same_id_is_a_duplicate_without_side_effects(
    client, services
):
    headers, body = fixture_delivery("review_approved")

    first = post(client, headers, body)
    second = post(client, headers, body)

    assert first.json["status"] == "accepted"
    assert second.status_code == 200
    assert second.json["status"] == "duplicate"
    assert len(outbox_rows(services.webhook_db)) == 1
    assert len(delivery_rows(services.webhook_db)) == 1
    duplicates = events_named(services.runtime_db, "delivery_duplicate")
    assert duplicates[0]["original_delivery_id"] == headers["X-Gitea-Delivery"]


def test_replay_with_a_new_id_is_recorded_as_a_duplicate_row(client, services):
    headers, body = fixture_delivery("review_rejected")
    replay = resign(headers, body)

    post(client, headers, body)
    response = post(client, replay, body)

    assert response.json["status"] == "duplicate"
    assert response.json["delivery_id"] == replay["X-Gitea-Delivery"]
    rows = delivery_rows(services.webhook_db)
    assert [row.status for row in rows] == ["accepted", "duplicate"]
    assert cycle(services.webhook_db).cycle_count == 1


def test_delivery_without_an_id_header_is_keyed_by_its_body_hash(client):
    headers, body = fixture_delivery("review_rejected")
    headers = {k: v for k, v in headers.items() if not k.endswith("-Delivery")}

    first = post(client, headers, body)
    second = post(client, headers, body)

    assert first.json["delivery_id"].startswith("sha256:")
    assert second.json["status"] == "duplicate"


def test_failed_policy_keeps_a_failed_row_that_a_redelivery_reprocesses(
    client, services, monkeypatch
):
    headers, body = fixture_delivery("review_rejected")
    original = ReviewPolicy._decide
    calls = {"n": 0}

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return original(self, *args)

    monkeypatch.setattr(ReviewPolicy, "_decide", flaky)

    failed = post(client, headers, body)
    rows_after_failure = delivery_rows(services.webhook_db)
    retried = post(client, headers, body)

    assert failed.status_code == 500
    assert failed.json == {"detail": "Internal Server Error"}
    assert "Traceback" not in failed.get_data(as_text=True)
    assert [row.status for row in rows_after_failure] == ["failed"]
    assert retried.json["status"] == "accepted"
    rows = delivery_rows(services.webhook_db)
    assert [(row.id, row.status) for row in rows] == [
        (rows_after_failure[0].id, "accepted")
    ]
    assert cycle(services.webhook_db).cycle_count == 1


# WH-6 normalisation: every fixture, in story order ------------------------------------

STORY = {
    "pr_opened": ("ignored", "pr_opened", [], "No issue ID found in PR title"),
    "pr_edited": ("ignored", "pr_edited", [], "PR edit not actionable"),
    "review_comment": ("ignored", "review_comment", [], "Review state not actionable"),
    "review_rejected": (
        "accepted",
        "review_rejected",
        ["cycle_incremented"],
        "PR #7 rejected (cycle 1/4)",
    ),
    "pr_synchronized": (
        "ignored",
        "pr_synchronized",
        [],
        "No issue ID found in PR title",
    ),
    "pr_comment": ("ignored", "pr_comment", [], "No issue ID found in PR title"),
    "pr_closed": ("accepted", "pr_closed", ["cycle_closed"], "PR #7 closed"),
    "pr_reopened": (
        "accepted",
        "pr_reopened",
        ["cycle_reopened"],
        "No issue ID found in PR title",
    ),
    "review_approved": (
        "accepted",
        "review_approved",
        ["merge_queued"],
        "PR #7 approved, merge queued",
    ),
    "pr_merged": (
        "accepted",
        "pr_merged",
        ["cycle_merged", "sandbox_deploy_queued"],
        "PR #7 merged, sandbox deployment queued",
    ),
    "push_main": ("ignored", None, [], "Event type push not handled"),
    "push_test_delivery": ("ignored", None, [], "Event type push not handled"),
    "forgejo_review_rejected": (
        "ignored",
        "review_rejected",
        ["rejection_ignored"],
        "PR #7 rejection ignored: cycle is merged",
    ),
}


def test_every_fixture_delivery_in_story_order_gets_the_right_answer(client, services):
    assert set(STORY) == set(DELIVERY_NAMES)
    for name in DELIVERY_NAMES:
        headers, body = fixture_delivery(name)

        response = post(client, headers, body)

        status, event, actions, message = STORY[name]
        assert response.status_code == 200, name
        assert response.json == {
            "status": status,
            "delivery_id": headers["X-Gitea-Delivery"],
            "event": event,
            "actions": actions,
            "message": message,
        }, name
    final = cycle(services.webhook_db)
    assert (final.status, final.cycle_count, final.head_sha) == (
        "merged",
        1,
        SECOND_HEAD,
    )
    assert len(events_named(services.runtime_db, "delivery_received")) == 13
    ignored = events_named(services.runtime_db, "delivery_ignored")
    assert [data["event_type"] for data in ignored] == ["push", "push"]
    assert ignored[0]["message"] == "Event type push not handled"


def only_family(headers, family):
    """The delivery as a sender of one header family would send it: Forgejo-only
    (`X-Forgejo-*`) or GitHub-style (`X-GitHub-Event` with Gitea's coarse names and
    `X-Hub-Signature-256`)."""
    keep = {"Content-Type": headers["Content-Type"]}
    if family == "forgejo":
        for suffix in ("Delivery", "Event", "Event-Type", "Signature"):
            keep[f"X-Forgejo-{suffix}"] = headers[f"X-Gitea-{suffix}"]
    else:
        keep["X-GitHub-Event"] = headers["X-Gitea-Event"]
        keep["X-GitHub-Delivery"] = headers["X-Gitea-Delivery"]
        keep["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"]
    return keep


@pytest.mark.parametrize("family", ["forgejo", "github"])
@pytest.mark.parametrize(
    "name", [n for n in DELIVERY_NAMES if n != "forgejo_review_rejected"]
)
def test_every_delivery_maps_the_same_through_each_header_family(
    make_app, name, family
):
    client = make_app().test_client()
    headers, body = fixture_delivery(name)

    response = post(client, only_family(headers, family), body)

    assert response.status_code == 200
    assert response.json["event"] == STORY[name][1]
    assert response.json["delivery_id"] == headers["X-Gitea-Delivery"]


def test_forgejo_rejection_is_counted_on_a_fresh_receiver(client, services):
    response = post(client, *fixture_delivery("forgejo_review_rejected"))

    assert response.json["status"] == "accepted"
    assert response.json["delivery_id"] == "d53beb3a-0d8c-422e-a751-4c9562d6ff51"
    assert cycle(services.webhook_db).cycle_count == 1


def test_old_gitea_without_event_type_headers_is_mapped_from_the_coarse_name(client):
    headers, body = fixture_delivery("review_approved")
    headers = {k: v for k, v in headers.items() if not k.endswith("-Event-Type")}

    response = post(client, headers, body)

    assert response.json["event"] == "review_approved"
    assert response.json["actions"] == ["merge_queued"]


def github_review(state, body_text="Needs work", reviewer="carol"):
    def change(payload):
        payload["review"] = {
            "state": state,
            "body": body_text,
            "user": {"login": reviewer},
        }

    headers, body = variant("review_rejected", change)
    delivery = headers["X-Gitea-Delivery"]
    github_headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request_review",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": headers["X-Hub-Signature-256"],
    }
    return github_headers, body


@pytest.mark.parametrize(
    "state, event, actions",
    [
        ("approved", "review_approved", ["merge_queued"]),
        ("changes_requested", "review_rejected", ["cycle_incremented"]),
        ("commented", "review_comment", []),
    ],
)
def test_github_style_review_deliveries_are_normalised(
    client, services, state, event, actions
):
    response = post(client, *github_review(state))

    assert response.status_code == 200
    assert response.json["event"] == event
    assert response.json["actions"] == actions


def test_github_style_reviewer_comes_from_review_user(client, services):
    post(client, *github_review("changes_requested", "Split this PR", "carol"))

    incremented = events_named(services.runtime_db, "review_cycle_incremented")
    assert incremented == [{"pr_key": PR_KEY, "cycle": 1, "reviewer": "carol"}]


def test_null_sub_objects_never_break_a_delivery(client, services):
    def no_review(payload):
        payload["review"] = None
        payload["requested_reviewer"] = None

    def merged_by_nobody(payload):
        payload["pull_request"]["merged_by"] = None
        payload["sender"] = None

    rejected = post(client, *variant("review_rejected", no_review))
    merged = post(client, *variant("pr_merged", merged_by_nobody))

    assert rejected.json["actions"] == ["cycle_incremented"]
    assert merged.json["status"] == "accepted"
    assert events_named(services.runtime_db, "pr_merged") == [
        {"pr_key": PR_KEY, "merged_by": "unknown"}
    ]
    with services.webhook_db.reader() as session:
        failure = session.scalars(select(ReviewFailure)).one()
    assert failure.reason == "No reason provided"


def test_delivery_row_records_what_was_received(client, services):
    headers, body = fixture_delivery("review_rejected")

    response = post(client, headers, body)

    (row,) = delivery_rows(services.webhook_db)
    assert row.delivery_id == headers["X-Gitea-Delivery"]
    assert row.event_type == "pull_request_review_rejected"
    assert row.action == "reviewed"
    assert (row.repo_full_name, row.pr_number, row.pr_key) == (
        "acme/widgets",
        7,
        PR_KEY,
    )
    assert row.signature_ok is True
    assert row.payload == body.decode()
    assert json.loads(row.result) == response.json
    assert event_roles(services.runtime_db, "delivery_received") == {"webhook"}


# Answering with Gitea down ------------------------------------------------------------


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_deliveries_are_answered_well_under_a_second_while_gitea_is_down(make_app):
    app = make_app(
        gitea_url=f"http://127.0.0.1:{closed_port()}",
        gitea_token="token",
        outbox_poll_ms=10,
        review_escalate_at=1,
        review_reject_at=2,
    )
    services = app.extensions["orket"]
    worker = OutboxWorker(
        services.settings, services.webhook_db, services.runtime_db, services.events
    )
    worker.start()
    client = app.test_client()
    try:
        timings = []
        for delivery in (
            rejection("bob", "first"),
            rejection("carol", "second"),
            fixture_delivery("review_approved"),
        ):
            started = time.perf_counter()
            response = post(client, *delivery)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
    finally:
        worker.stop()

    assert max(timings) < 1.0
    assert {row.status for row in outbox_rows(services.webhook_db)} == {"pending"}


# /webhook/test ------------------------------------------------------------------------


TEST_TOKEN = "dry-run-token-123"


@pytest.fixture
def test_client(make_app):
    app = make_app(enable_webhook_test_endpoint=True, webhook_test_token=TEST_TOKEN)
    return app.test_client(), app.extensions["orket"]


def test_dry_run_endpoint_is_404_unless_enabled(client):
    response = client.post(
        "/webhook/test", json={}, headers={"X-Orket-Test-Token": "x"}
    )

    assert response.status_code == 404
    assert response.json == {"detail": "Not Found"}


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"X-Orket-Test-Token": "wrong"}, 403),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"X-Orket-Test-Token": TEST_TOKEN}, 200),
        ({"Authorization": f"Bearer {TEST_TOKEN}"}, 200),
    ],
)
def test_dry_run_token_rules(test_client, headers, status):
    client, _ = test_client

    response = client.post("/webhook/test", json={}, headers=headers)

    assert response.status_code == status


def test_dry_run_decides_but_keeps_only_one_dry_run_row(test_client):
    client, services = test_client
    payload = fixture_payload("review_rejected")
    del payload["action"]

    response = client.post(
        "/webhook/test",
        json={
            "event": "pull_request_review_rejected",
            "action": "reviewed",
            "payload": payload,
        },
        headers={"X-Orket-Test-Token": TEST_TOKEN},
    )

    assert response.status_code == 200
    body = response.json
    assert body["dry_run"] is True
    assert body["status"] == "accepted"
    assert body["event"] == "review_rejected"
    assert body["actions"] == ["cycle_incremented"]
    assert body["delivery_id"].startswith("test-")
    (row,) = delivery_rows(services.webhook_db)
    assert (row.delivery_id, row.status) == (body["delivery_id"], "dry_run")
    assert cycle(services.webhook_db) is None
    assert outbox_rows(services.webhook_db) == []
    assert events_named(services.runtime_db, "review_cycle_incremented") == []
    (dry_run,) = events_named(services.runtime_db, "delivery_dry_run")
    assert dry_run["actions"] == ["cycle_incremented"]


def test_dry_run_of_a_fourth_rejection_shows_what_would_happen(
    make_app, settings_factory
):
    app = make_app(
        enable_webhook_test_endpoint=True,
        webhook_test_token=TEST_TOKEN,
        review_escalate_at=1,
        review_reject_at=2,
    )
    client = app.test_client()
    services = app.extensions["orket"]
    post(client, *rejection("bob", "first"))
    before = outbox_rows(services.webhook_db)

    response = client.post(
        "/webhook/test",
        json={
            "event": "pull_request_review_rejected",
            "payload": fixture_payload("review_rejected"),
        },
        headers={"X-Orket-Test-Token": TEST_TOKEN},
    )

    assert response.json["actions"] == [
        "cycle_incremented",
        "pr_close_queued",
        "rejection_comment_queued",
        "requirements_issue_queued",
    ]
    after = outbox_rows(services.webhook_db)
    assert [row.id for row in after] == [row.id for row in before]
    assert cycle(services.webhook_db).cycle_count == 1


def test_dry_run_with_an_unknown_event_type_is_ignored(test_client):
    client, _ = test_client

    response = client.post(
        "/webhook/test", json={}, headers={"X-Orket-Test-Token": TEST_TOKEN}
    )

    assert response.json["status"] == "ignored"
    assert response.json["message"] == "Event type test not handled"
    assert response.json["dry_run"] is True


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b'{"event": 5}', 422),
        (b'{"payload": []}', 422),
        (b'{"event": "pull_request", "payload": {"action": "opened"}}', 422),
    ],
)
def test_dry_run_rejects_bad_bodies(test_client, body, status):
    client, _ = test_client

    response = client.post(
        "/webhook/test",
        data=body,
        headers={"X-Orket-Test-Token": TEST_TOKEN, "Content-Type": "application/json"},
    )

    assert response.status_code == status


def test_dry_run_has_its_own_rate_limit(make_app):
    client = make_app(
        enable_webhook_test_endpoint=True, webhook_test_token=TEST_TOKEN, rate_limit=1
    ).test_client()
    headers = {"X-Orket-Test-Token": TEST_TOKEN}

    first = client.post("/webhook/test", json={}, headers=headers)
    second = client.post("/webhook/test", json={}, headers=headers)

    assert (first.status_code, second.status_code) == (200, 429)
    assert int(second.headers["Retry-After"]) >= 1


def test_dry_run_body_over_one_mib_is_413(test_client):
    client, _ = test_client

    response = client.post(
        "/webhook/test",
        data=padded_body(MIB + 1),
        headers={"X-Orket-Test-Token": TEST_TOKEN},
    )

    assert response.status_code == 413


# /metrics -----------------------------------------------------------------------------


def test_metrics_are_404_without_an_api_key(make_app):
    client = make_app(api_key=None).test_client()

    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 403),
        ({"Authorization": "Bearer wrong"}, 403),
    ],
)
def test_metrics_need_the_api_key(client, headers, status):
    assert client.get("/metrics", headers=headers).status_code == status


def test_metrics_count_deliveries_and_outbox_rows(client):
    post(client, *fixture_delivery("review_approved"))
    post(client, *fixture_delivery("push_main"))

    response = client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})

    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert 'orket_webhook_deliveries{status="accepted"} 1.0' in text
    assert 'orket_webhook_deliveries{status="ignored"} 1.0' in text
    assert 'orket_outbox_rows{kind="merge",status="pending"} 1.0' in text
    assert "orket_outbox_dead_rows 0.0" in text


def test_concurrent_deliveries_for_one_pr_are_counted_once_each(make_app):
    app = make_app(review_escalate_at=10, review_reject_at=20)
    services = app.extensions["orket"]
    deliveries = [rejection("bob", f"reason {n}") for n in range(8)]
    answers = []

    def send(delivery):
        answers.append(post(app.test_client(), *delivery).json["status"])

    threads = [threading.Thread(target=send, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers.count("accepted") == 8
    assert cycle(services.webhook_db).cycle_count == 8
    with services.webhook_db.reader() as session:
        numbers = session.scalars(select(ReviewFailure.cycle_number)).all()
    assert sorted(numbers) == list(range(1, 9))
