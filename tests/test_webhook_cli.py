"""`orket outbox|deliveries|cycles|bugfix|create-webhook` (OPS-2)."""

import json
from datetime import datetime, timedelta

import pytest

from app.models.base import load_json, utcnow
from app.models.webhook import BugFixPhase, GiteaOutbox
from app.webhook.bugfix import start_phase
from app.webhook.outbox import PullRef, add_rows, comment_row, merge_row
from tests.conftest import WEBHOOK_SECRET
from tests.webhook_support import (
    PR_KEY,
    TOKEN,
    cycle,
    events_named,
    fixture_delivery,
    outbox_rows,
    post,
    rejection,
    requests_to,
)

PR = PullRef("acme", "widgets", 7)


@pytest.fixture
def make_app(make_webhook_app):
    return make_webhook_app


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def services(app):
    return app.extensions["orket"]


@pytest.fixture
def orket(app):
    runner = app.test_cli_runner()

    def run(*args):
        return runner.invoke(args=["orket", *args])

    return run


def owe(services, *rows):
    with services.webhook_db.transaction() as session:
        add_rows(session, list(rows))


def set_status(services, row_id, status, attempts=3):
    with services.webhook_db.transaction() as session:
        row = session.get(GiteaOutbox, row_id)
        row.status = status
        row.attempts = attempts


# outbox -------------------------------------------------------------------------------


def test_outbox_list_shows_rows_and_filters_by_status(orket, services):
    owe(
        services,
        comment_row(PR, "a", "d1:comment", "d1"),
        merge_row(PR, None, "d2:merge", "d2"),
    )
    merge_id = outbox_rows(services.webhook_db)[1].id
    set_status(services, merge_id, "dead")

    everything = orket("outbox", "list")
    dead = orket("outbox", "list", "--status", "dead")

    assert everything.exit_code == 0
    assert "d1:comment" in everything.output and "d2:merge" in everything.output
    assert dead.exit_code == 0
    assert "d2:merge" in dead.output and "d1:comment" not in dead.output


def test_outbox_list_refuses_an_unknown_status(orket):
    assert orket("outbox", "list", "--status", "weird").exit_code == 2


def test_outbox_show_prints_the_row_as_json(orket, services):
    owe(services, comment_row(PR, "hello", "d1:comment", "d1"))
    row_id = outbox_rows(services.webhook_db)[0].id

    result = orket("outbox", "show", str(row_id))

    shown = json.loads(result.output)
    assert result.exit_code == 0
    assert shown["dedupe_key"] == "d1:comment"
    assert shown["body"] == {"body": "hello"}
    assert shown["path"] == "/api/v1/repos/acme/widgets/issues/7/comments"


def test_outbox_show_of_a_missing_row_fails(orket):
    result = orket("outbox", "show", "999")

    assert result.exit_code == 1
    assert "not found" in result.output


@pytest.mark.parametrize("status", ["failed", "dead"])
def test_outbox_retry_puts_the_row_back_with_attempts_reset(orket, services, status):
    owe(services, comment_row(PR, "hello", "d1:comment", "d1"))
    row_id = outbox_rows(services.webhook_db)[0].id
    set_status(services, row_id, status)

    result = orket("outbox", "retry", str(row_id))

    row = outbox_rows(services.webhook_db)[0]
    assert result.exit_code == 0
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at <= utcnow()


@pytest.mark.parametrize("status", ["pending", "done"])
def test_outbox_retry_refuses_rows_that_are_not_failed_or_dead(orket, services, status):
    owe(services, comment_row(PR, "hello", "d1:comment", "d1"))
    row_id = outbox_rows(services.webhook_db)[0].id
    set_status(services, row_id, status, attempts=1)

    result = orket("outbox", "retry", str(row_id))

    assert result.exit_code == 1
    assert outbox_rows(services.webhook_db)[0].status == status


# deliveries and cycles ----------------------------------------------------------------


def test_deliveries_list_shows_the_latest_first(orket, app):
    client = app.test_client()
    post(client, *fixture_delivery("pr_opened"))
    post(client, *fixture_delivery("review_rejected"))

    result = orket("deliveries", "list", "--limit", "1")

    assert result.exit_code == 0
    assert "4fc615ee-27e7-443d-98dc-a00dd3fa33df" in result.output
    assert "1990ac6d" not in result.output


def test_cycles_list_filters_by_status(orket, app):
    client = app.test_client()
    post(client, *rejection(number=7))
    post(client, *rejection(number=8))
    post(client, *fixture_delivery("pr_closed"))

    closed = orket("cycles", "list", "--status", "closed")

    assert closed.exit_code == 0
    assert "acme/widgets#7" in closed.output
    assert "acme/widgets#8" not in closed.output


def test_cycles_reset_makes_the_cycle_active_again(orket, app, services):
    client = app.test_client()
    for n in range(4):
        post(client, *rejection(f"r{n}", f"reason {n}"))

    result = orket("cycles", "reset", PR_KEY)

    assert result.exit_code == 0
    reset = cycle(services.webhook_db)
    assert (reset.status, reset.cycle_count) == ("active", 0)
    assert events_named(services.runtime_db, "review_cycle_reset") == [
        {"pr_key": PR_KEY, "previous_status": "rejected", "previous_cycle": 4}
    ]
    again = post(client, *rejection("r9", "after the reset"))
    assert again.json["message"] == "PR #7 rejected (cycle 1/4)"


def test_cycles_reset_of_an_unknown_pr_fails(orket):
    result = orket("cycles", "reset", "acme/widgets#404")

    assert result.exit_code == 1
    assert "No review cycle" in result.output


# bugfix -------------------------------------------------------------------------------


def start(services, rock_id="widgets-pr7", now=None):
    with services.webhook_db.transaction() as session:
        start_phase(
            session,
            services.settings,
            rock_id=rock_id,
            pr_key=PR_KEY,
            sandbox_id=f"sandbox-{rock_id}",
            now=now,
        )


def phase(services, rock_id="widgets-pr7"):
    with services.webhook_db.reader() as session:
        row = session.get(BugFixPhase, rock_id)
    return row.status, load_json(row.data_json, {})


def test_bugfix_extend_adds_a_week_and_records_the_reason(orket, services):
    start(services)
    _, before = phase(services)

    result = orket("bugfix", "extend", "widgets-pr7", "--reason", "QA needs time")

    status, data = phase(services)
    assert result.exit_code == 0
    assert status == "extended"
    added = datetime.fromisoformat(data["scheduled_end"]) - datetime.fromisoformat(
        before["scheduled_end"]
    )
    assert added == timedelta(days=7)
    assert data["extensions"][0]["reason"] == "QA needs time"


def test_bugfix_extend_stops_at_the_maximum(make_app):
    app = make_app(bugfix_days=7, bugfix_max_days=10)
    services = app.extensions["orket"]
    runner = app.test_cli_runner()
    start(services)

    first = runner.invoke(
        args=["orket", "bugfix", "extend", "widgets-pr7", "--reason", "a"]
    )
    second = runner.invoke(
        args=["orket", "bugfix", "extend", "widgets-pr7", "--reason", "b"]
    )

    _, data = phase(services)
    ends = datetime.fromisoformat(data["scheduled_end"])
    started = datetime.fromisoformat(data["started_at"])
    assert first.exit_code == 0
    assert ends - started == timedelta(days=10)
    assert second.exit_code == 1
    assert "maximum" in second.output


def test_bugfix_extend_needs_a_reason_and_a_phase(orket):
    assert orket("bugfix", "extend", "widgets-pr7").exit_code == 2
    missing = orket("bugfix", "extend", "nope", "--reason", "x")
    assert missing.exit_code == 1
    assert "No bug-fix phase" in missing.output


# create-webhook -----------------------------------------------------------------------


def test_create_webhook_registers_an_active_json_hook(httpserver, make_app):
    httpserver.expect_request(
        "/api/v1/repos/acme/widgets/hooks", method="POST"
    ).respond_with_json({"id": 42, "type": "gitea", "active": True}, status=201)
    app = make_app(gitea_url=httpserver.url_for("/").rstrip("/"), gitea_token=TOKEN)

    result = app.test_cli_runner().invoke(
        args=[
            "orket",
            "create-webhook",
            "--repo",
            "acme/widgets",
            "--url",
            "http://orket.internal:8080/webhook/gitea",
        ]
    )

    assert result.exit_code == 0, result.output
    assert "42" in result.output
    assert "ALLOWED_HOST_LIST" in result.output
    (request,) = requests_to(httpserver, "POST", "/api/v1/repos/acme/widgets/hooks")
    assert request.headers["Authorization"] == f"token {TOKEN}"
    assert json.loads(request.get_data()) == {
        "type": "gitea",
        "config": {
            "url": "http://orket.internal:8080/webhook/gitea",
            "content_type": "json",
            "secret": WEBHOOK_SECRET,
        },
        "events": [
            "pull_request_only",
            "pull_request_sync",
            "pull_request_review",
            "pull_request_comment",
        ],
        "active": True,
    }
    assert TOKEN not in result.output and WEBHOOK_SECRET not in result.output


def test_create_webhook_reports_gitea_refusals(httpserver, make_app):
    httpserver.expect_request(
        "/api/v1/repos/acme/widgets/hooks", method="POST"
    ).respond_with_json({"message": "invalid url"}, status=422)
    app = make_app(gitea_url=httpserver.url_for("/").rstrip("/"), gitea_token=TOKEN)

    result = app.test_cli_runner().invoke(
        args=["orket", "create-webhook", "--repo", "acme/widgets", "--url", "nope"]
    )

    assert result.exit_code == 1
    assert "HTTP 422" in result.output and "invalid url" in result.output


@pytest.mark.parametrize(
    "overrides, args, code",
    [
        ({}, ["--repo", "acme/widgets", "--url", "http://x"], 1),
        ({"gitea_token": TOKEN}, ["--repo", "widgets", "--url", "http://x"], 2),
    ],
    ids=["no-credentials", "bad-repo"],
)
def test_create_webhook_refuses_without_credentials_or_owner(
    make_app, overrides, args, code
):
    app = make_app(**overrides)

    result = app.test_cli_runner().invoke(args=["orket", "create-webhook", *args])

    assert result.exit_code == code
