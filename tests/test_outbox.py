"""The outbox worker against a Gitea stub (WH-8, WH-9), runtime rows, bug-fix
phases (WH-12) and surviving a killed process."""

import json
import socket
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update
from werkzeug.wrappers import Response

from app import create_webhook_app
from app.events import EventLog
from app.models.base import dump_json, load_json, utcnow
from app.models.runtime import Session as RunRow
from app.models.webhook import BugFixPhase, GiteaOutbox, PrReviewCycle
from app.webhook.bugfix import complete_expired_phases
from app.webhook.gitea_calls import GiteaCalls
from app.webhook.messages import comment_marker, requirements_issue_title
from app.webhook.outbox import (
    OutboxWorker,
    PullRef,
    add_rows,
    backoff_seconds,
    close_pr_row,
    comment_row,
    merge_row,
    queue_comment,
    requirements_issue_row,
    retry_row,
    runtime_row,
)
from tests.webhook_support import (
    BOT,
    PR_KEY,
    REPO,
    SECOND_HEAD,
    TOKEN,
    api_bytes,
    create_issue_handler,
    create_label_handler,
    drain,
    events_named,
    outbox_rows,
    post,
    rejection,
    requests_to,
    respond,
)

PR = PullRef("acme", "widgets", 7)
REPO_ONLY = PullRef("acme", "widgets")
MERGE = f"{REPO}/pulls/7/merge"
COMMENTS = f"{REPO}/issues/7/comments"
DELIVERY = "0b6c1f3e-8d2a-4c55-9a07-2f1e4d3c9b10"
MIDDLE = 0.5  # rng value that makes the backoff exactly 2^attempts


@pytest.fixture
def gitea_settings(settings_factory, httpserver):
    def build(**overrides):
        values = {
            "gitea_url": httpserver.url_for("/").rstrip("/"),
            "gitea_token": TOKEN,
            "gitea_bot_login_raw": BOT,
            "outbox_max_attempts": 3,
        }
        values.update(overrides)
        return settings_factory(**values)

    return build


@pytest.fixture
def make_worker(gitea_settings, webhook_db, runtime_db):
    workers = []

    def build(**overrides):
        settings = gitea_settings(**overrides)
        events = EventLog(settings, runtime_db)
        worker = OutboxWorker(
            settings, webhook_db, runtime_db, events, rng=lambda: MIDDLE
        )
        workers.append(worker)
        return worker

    yield build
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(make_worker):
    return make_worker()


def owe(webhook_db, *rows):
    with webhook_db.transaction() as session:
        add_rows(session, list(rows))
    return outbox_rows(webhook_db)


def make_due(webhook_db):
    with webhook_db.transaction() as session:
        session.execute(
            update(GiteaOutbox)
            .where(GiteaOutbox.status == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def only_row(webhook_db):
    (row,) = outbox_rows(webhook_db)
    return row


def comment(key=f"{DELIVERY}:comment", text="Hello"):
    return comment_row(PR, f"{text}\n\n{comment_marker(key)}", key, DELIVERY)


def add_cycle(webhook_db, status="active"):
    now = utcnow()
    with webhook_db.transaction() as session:
        session.add(
            PrReviewCycle(
                pr_key=PR_KEY,
                repo_full_name="acme/widgets",
                pr_number=7,
                cycle_count=0,
                status=status,
                created_at=now,
                updated_at=now,
            )
        )


# 2xx ----------------------------------------------------------------------------------


def test_comment_is_posted_with_the_bot_token_and_marked_done(
    httpserver, worker, webhook_db
):
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    row = owe(webhook_db, comment())[0]

    assert worker.run_once() == 1

    (request,) = requests_to(httpserver, "POST", COMMENTS)
    assert request.headers["Authorization"] == f"token {TOKEN}"
    assert json.loads(request.get_data()) == load_json(row.body, {})
    done = only_row(webhook_db)
    assert (done.status, done.attempts, done.last_status) == ("done", 1, 201)


def test_close_answered_201_is_done(httpserver, worker, webhook_db):
    respond(httpserver, f"{REPO}/pulls/7", "PATCH", 201, "pull_get.json")
    owe(webhook_db, close_pr_row(PR, f"{DELIVERY}:close_pr", DELIVERY))

    worker.run_once()

    (request,) = requests_to(httpserver, "PATCH", f"{REPO}/pulls/7")
    assert json.loads(request.get_data()) == {"state": "closed"}
    assert only_row(webhook_db).status == "done"


def test_merge_answered_200_with_an_empty_body_is_done(httpserver, worker, webhook_db):
    respond(httpserver, MERGE, "POST", 200)
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))

    worker.run_once()

    (request,) = requests_to(httpserver, "POST", MERGE)
    assert json.loads(request.get_data()) == {
        "Do": "merge",
        "MergeMessageField": "Auto-merged PR #7 after approval",
        "delete_branch_after_merge": True,
        "head_commit_id": SECOND_HEAD,
    }
    assert (only_row(webhook_db).status, only_row(webhook_db).last_status) == (
        "done",
        200,
    )


# Merge failures -----------------------------------------------------------------------


def test_merge_405_not_yet_mergeable_is_retried_with_backoff(
    httpserver, worker, webhook_db, runtime_db
):
    respond(httpserver, MERGE, "POST", 405, "merge_405_try_again.json")
    respond(httpserver, MERGE, "GET", 404, "merge_404_closed.json")
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))
    before = utcnow()

    worker.run_once()

    row = only_row(webhook_db)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, 405)
    assert row.last_error == "Please try again later"
    wait = (row.next_attempt_at - before).total_seconds()
    assert 1.9 < wait < 3.0
    assert events_named(runtime_db, "gitea_call_failed") == [
        {
            "outbox_id": row.id,
            "kind": "merge",
            "status": 405,
            "error": "Please try again later",
            "attempts": 1,
        }
    ]
    assert events_named(runtime_db, "pr_merge_failed") == []


def test_merge_405_that_never_clears_fails_with_an_explanatory_comment(
    httpserver, make_worker, webhook_db, runtime_db
):
    worker = make_worker(outbox_max_attempts=2)
    respond(httpserver, MERGE, "POST", 405, "merge_405_try_again.json")
    respond(httpserver, MERGE, "GET", 404, "merge_404_closed.json")
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))

    worker.run_once()
    make_due(webhook_db)
    worker.run_once()

    merge, explanation = outbox_rows(webhook_db)
    assert (merge.status, merge.attempts) == ("failed", 2)
    assert (explanation.kind, explanation.dedupe_key) == (
        "comment",
        f"{DELIVERY}:comment",
    )
    text = load_json(explanation.body, {})["body"]
    assert "> Please try again later" in text
    assert "HTTP 405" in text
    assert events_named(runtime_db, "pr_merge_failed") == [
        {"pr_key": PR_KEY, "status": 405, "reason": "Please try again later"}
    ]
    assert events_named(runtime_db, "outbox_dead") == []

    drain(worker)

    assert [row.status for row in outbox_rows(webhook_db)] == ["failed", "done"]
    (posted,) = requests_to(httpserver, "POST", COMMENTS)
    assert "Please try again later" in json.loads(posted.get_data())["body"]


def test_merge_405_on_an_already_merged_pr_is_done(
    httpserver, worker, webhook_db, runtime_db
):
    respond(httpserver, MERGE, "POST", 405, "merge_405_already_merged.json")
    respond(httpserver, MERGE, "GET", 204)
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))

    worker.run_once()

    assert [row.status for row in outbox_rows(webhook_db)] == ["done"]
    assert [e["status"] for e in events_named(runtime_db, "gitea_call_failed")] == [405]
    assert events_named(runtime_db, "pr_merge_failed") == []


def test_merge_409_fails_and_explains_the_head_moved(
    httpserver, worker, webhook_db, runtime_db
):
    respond(httpserver, MERGE, "POST", 409, "merge_409_head_out_of_date.json")
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))

    worker.run_once()

    merge, explanation = outbox_rows(webhook_db)
    assert (merge.status, merge.attempts, merge.last_status) == ("failed", 1, 409)
    assert "> head out of date" in load_json(explanation.body, {})["body"]
    assert events_named(runtime_db, "pr_merge_failed") == [
        {"pr_key": PR_KEY, "status": 409, "reason": "head out of date"}
    ]
    assert len(events_named(runtime_db, "gitea_call_failed")) == 1


def test_merge_404_fails_and_closes_the_cycle(
    httpserver, worker, webhook_db, runtime_db
):
    add_cycle(webhook_db, "active")
    respond(httpserver, MERGE, "POST", 404, "merge_404_closed.json")
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))

    worker.run_once()

    assert [row.status for row in outbox_rows(webhook_db)] == ["failed"]
    with webhook_db.reader() as session:
        assert session.scalars(select(PrReviewCycle.status)).one() == "closed"
    (failed,) = events_named(runtime_db, "pr_merge_failed")
    assert (failed["status"], failed["reason"]) == (
        404,
        "The target couldn't be found.",
    )


# Transient failures -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_answers_are_retried_then_dead(
    httpserver, make_worker, webhook_db, runtime_db, status
):
    worker = make_worker(outbox_max_attempts=3)
    respond(httpserver, COMMENTS, "POST", status, body={"message": "busy"})
    respond(httpserver, COMMENTS, "GET", status, body={"message": "busy"})
    owe(webhook_db, comment())

    states = []
    for _ in range(3):
        make_due(webhook_db)
        worker.run_once()
        row = only_row(webhook_db)
        states.append((row.status, row.attempts))

    assert states == [("pending", 1), ("pending", 2), ("dead", 3)]
    assert len(events_named(runtime_db, "gitea_call_failed")) == 3
    (dead,) = events_named(runtime_db, "outbox_dead")
    assert (dead["kind"], dead["status"], dead["attempts"]) == ("comment", status, 3)


def test_connection_refused_is_retried(make_worker, webhook_db, runtime_db):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = make_worker(gitea_url=f"http://127.0.0.1:{port}")
    owe(webhook_db, comment())

    worker.run_once()

    row = only_row(webhook_db)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, None)
    assert "ConnectionError" in row.last_error
    (failed,) = events_named(runtime_db, "gitea_call_failed")
    assert failed["status"] is None


def test_timeout_is_retried(httpserver, make_worker, webhook_db):
    def slow(_request):
        time.sleep(1.5)
        return Response("{}", status=201, content_type="application/json")

    httpserver.expect_request(f"{REPO}/pulls/7", method="PATCH").respond_with_handler(
        slow
    )
    worker = make_worker(gitea_timeout_sec=0.3)
    owe(webhook_db, close_pr_row(PR, f"{DELIVERY}:close_pr", DELIVERY))

    worker.run_once()

    assert only_row(webhook_db).status == "pending"


@pytest.mark.parametrize(
    "row, path, method, status",
    [
        (close_pr_row(PR, "d:close_pr", "d"), f"{REPO}/pulls/7", "PATCH", 412),
        (comment(), COMMENTS, "POST", 403),
        (merge_row(PR, None, "d:merge", "d"), MERGE, "POST", 422),
    ],
    ids=["close-412", "comment-403", "merge-422"],
)
def test_other_client_errors_fail_at_once(
    httpserver, worker, webhook_db, runtime_db, row, path, method, status
):
    respond(httpserver, path, method, status, body={"message": "nope"})
    owe(webhook_db, row)

    worker.run_once()

    stored = only_row(webhook_db)
    assert (stored.status, stored.attempts, stored.last_status) == ("failed", 1, status)
    assert events_named(runtime_db, "gitea_call_failed")[0]["status"] == status
    assert events_named(runtime_db, "pr_merge_failed") == []


def test_backoff_doubles_is_capped_and_jittered_by_a_fifth():
    assert backoff_seconds(1, 300, rng=lambda: 0.5) == 2
    assert backoff_seconds(3, 300, rng=lambda: 0.5) == 8
    assert backoff_seconds(3, 300, rng=lambda: 0.0) == pytest.approx(6.4)
    assert backoff_seconds(3, 300, rng=lambda: 1.0) == pytest.approx(9.6)
    assert backoff_seconds(20, 300, rng=lambda: 0.5) == 300


# Requirements issue -------------------------------------------------------------------


def requirements_row():
    key = f"{DELIVERY}:create_requirements_issue"
    title = requirements_issue_title(7, 4)
    text = f"Every reason\n\n{comment_marker(key)}"
    return requirements_issue_row(REPO_ONLY, title, text, key, DELIVERY)


def test_requirements_issue_creates_missing_labels_and_sends_their_ids(
    httpserver, worker, webhook_db
):
    respond(httpserver, f"{REPO}/labels", "GET", 200, "labels_list.json")
    httpserver.expect_request(f"{REPO}/labels", method="POST").respond_with_handler(
        create_label_handler(first_id=6)
    )
    httpserver.expect_request(f"{REPO}/issues", method="POST").respond_with_handler(
        create_issue_handler()
    )
    owe(webhook_db, requirements_row())

    worker.run_once()

    created = [
        json.loads(r.get_data())
        for r in requests_to(httpserver, "POST", f"{REPO}/labels")
    ]
    assert [(label["name"], label["color"]) for label in created] == [
        ("requirements-review", "#0075ca"),
        ("auto-rejected", "#e11d21"),
    ]
    (issue,) = requests_to(httpserver, "POST", f"{REPO}/issues")
    sent = json.loads(issue.get_data())
    assert sent["labels"] == [6, 7]
    assert sent["title"] == "Requirements Review: PR #7 failed after 4 cycles"
    assert (only_row(webhook_db).status, only_row(webhook_db).last_status) == (
        "done",
        201,
    )


def test_requirements_issue_reuses_labels_by_exact_name_lowest_id_first(
    httpserver, worker, webhook_db
):
    labels = json.loads(api_bytes("labels_list.json"))
    template = labels[0]
    labels += [
        {**template, "id": 40, "name": "requirements-review"},
        {**template, "id": 31, "name": "requirements-review"},
        {**template, "id": 33, "name": "Auto-Rejected"},
        {**template, "id": 35, "name": "auto-rejected"},
    ]
    respond(httpserver, f"{REPO}/labels", "GET", 200, body=labels)
    httpserver.expect_request(f"{REPO}/issues", method="POST").respond_with_handler(
        create_issue_handler()
    )
    owe(webhook_db, requirements_row())

    worker.run_once()

    assert requests_to(httpserver, "POST", f"{REPO}/labels") == []
    (issue,) = requests_to(httpserver, "POST", f"{REPO}/issues")
    assert json.loads(issue.get_data())["labels"] == [31, 35]
    assert only_row(webhook_db).status == "done"


# Idempotent retries -------------------------------------------------------------------


def retried(webhook_db):
    """As if an earlier attempt was claimed and its outcome never recorded."""
    with webhook_db.transaction() as session:
        session.execute(
            update(GiteaOutbox).values(
                attempts=1, next_attempt_at=utcnow() - timedelta(seconds=1)
            )
        )


def test_retried_comment_already_on_the_pr_is_not_posted_again(
    httpserver, worker, webhook_db
):
    row = owe(webhook_db, comment())[0]
    existing = json.loads(api_bytes("comment_created.json"))
    existing["body"] = load_json(row.body, {})["body"]
    respond(httpserver, COMMENTS, "GET", 200, body=[existing])
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    retried(webhook_db)

    worker.run_once()

    assert requests_to(httpserver, "POST", COMMENTS) == []
    assert (only_row(webhook_db).status, only_row(webhook_db).attempts) == ("done", 2)


def test_comment_whose_first_answer_was_lost_is_posted_once(
    httpserver, worker, webhook_db
):
    """Gitea stores the comment but the answer is a 502; the retry finds it."""
    posted = []

    def create(request):
        posted.append(json.loads(request.get_data()))
        return Response('{"message":"bad gateway"}', status=502)

    def listing(_request):
        items = [
            {**json.loads(api_bytes("comment_created.json")), "body": body["body"]}
            for body in posted
        ]
        return Response(json.dumps(items), status=200, content_type="application/json")

    httpserver.expect_request(COMMENTS, method="POST").respond_with_handler(create)
    httpserver.expect_request(COMMENTS, method="GET").respond_with_handler(listing)
    owe(webhook_db, comment())

    worker.run_once()
    make_due(webhook_db)
    worker.run_once()

    assert len(posted) == 1
    assert only_row(webhook_db).status == "done"


def test_retried_requirements_issue_found_by_exact_title_is_not_opened_again(
    httpserver, worker, webhook_db
):
    issue = json.loads(api_bytes("issue_created.json"))
    near_miss = {
        **issue,
        "id": 70,
        "title": "Requirements Review: PR #7 failed after 4 cycles?",
    }
    exact = {**issue, "title": requirements_issue_title(7, 4)}
    respond(httpserver, f"{REPO}/issues", "GET", 200, body=[near_miss, exact])
    owe(webhook_db, requirements_row())
    retried(webhook_db)

    worker.run_once()

    assert requests_to(httpserver, "POST", f"{REPO}/issues") == []
    assert only_row(webhook_db).status == "done"
    (search,) = requests_to(httpserver, "GET", f"{REPO}/issues")
    assert search.args["state"] == "open"


def test_retried_merge_checks_the_merged_state_first(httpserver, worker, webhook_db):
    respond(httpserver, MERGE, "GET", 204)
    owe(webhook_db, merge_row(PR, SECOND_HEAD, f"{DELIVERY}:merge", DELIVERY))
    retried(webhook_db)

    worker.run_once()

    assert requests_to(httpserver, "POST", MERGE) == []
    assert only_row(webhook_db).status == "done"


def test_a_dedupe_key_is_owed_only_once(webhook_db):
    owe(webhook_db, comment())
    owe(webhook_db, comment(text="again"))

    assert len(outbox_rows(webhook_db)) == 1
    assert not queue_comment(
        webhook_db,
        owner="acme",
        repo="widgets",
        number=7,
        text="x",
        dedupe_key=f"{DELIVERY}:comment",
    )
    assert queue_comment(
        webhook_db,
        owner="acme",
        repo="widgets",
        number=7,
        text="x",
        dedupe_key="sandbox:s",
    )


# Claims, ordering and credentials -----------------------------------------------------


def test_claim_counts_the_attempt_and_leases_the_row(
    httpserver, make_worker, webhook_db
):
    worker = make_worker(outbox_lease_sec=120)
    seen = []

    def create(_request):
        row = only_row(webhook_db)
        seen.append((row.attempts, (row.next_attempt_at - utcnow()).total_seconds()))
        return Response(api_bytes("comment_created.json"), status=201)

    httpserver.expect_request(COMMENTS, method="POST").respond_with_handler(create)
    owe(webhook_db, comment())

    worker.run_once()

    ((attempts, lease_left),) = seen
    assert attempts == 1
    assert 110 < lease_left <= 120


def test_rows_of_one_delivery_run_in_id_order(httpserver, worker, webhook_db):
    respond(httpserver, f"{REPO}/pulls/7", "PATCH", 503, body={"message": "down"})
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    respond(
        httpserver, f"{REPO}/issues/8/comments", "POST", 201, "comment_created.json"
    )
    other = comment_row(
        PullRef("acme", "widgets", 8), "other", "other:comment", "other"
    )
    owe(
        webhook_db,
        close_pr_row(PR, f"{DELIVERY}:close_pr", DELIVERY),
        comment(),
        other,
    )

    drain(worker)
    make_due(webhook_db)
    worker.run_once()

    close, first_comment, unrelated = outbox_rows(webhook_db)
    assert (close.status, close.attempts) == ("pending", 2)
    assert (first_comment.status, first_comment.attempts) == ("pending", 0)
    assert unrelated.status == "done"
    assert requests_to(httpserver, "POST", COMMENTS) == []


def test_without_credentials_gitea_rows_wait_and_runtime_rows_run(
    httpserver, make_worker, webhook_db, runtime_db
):
    worker = make_worker(gitea_token=None, gitea_admin_password=None)
    owe(
        webhook_db,
        comment(),
        runtime_row(
            "runtime_sandbox_job",
            "sandbox:sandbox-widgets-pr7",
            {
                "kind": "sandbox_deploy",
                "sandbox_id": "sandbox-widgets-pr7",
                "params": {},
            },
            f"{DELIVERY}:runtime_sandbox_job",
            "another-delivery",
        ),
    )

    drain(worker)

    waiting, ran = outbox_rows(webhook_db)
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert ran.status == "done"
    assert len(httpserver.log) == 0


def test_outbox_retried_row_is_run_again(httpserver, worker, webhook_db):
    respond(httpserver, COMMENTS, "POST", 403, body={"message": "locked"})
    owe(webhook_db, comment())
    worker.run_once()
    httpserver.clear()
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    respond(httpserver, COMMENTS, "GET", 200, body=[])

    retry_row(webhook_db, only_row(webhook_db).id)
    worker.run_once()

    assert (only_row(webhook_db).status, only_row(webhook_db).attempts) == ("done", 1)


def test_worker_thread_works_rows_until_stopped(httpserver, make_worker, webhook_db):
    worker = make_worker(outbox_poll_ms=20)
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    worker.start()
    owe(webhook_db, comment())

    deadline = time.monotonic() + 10
    while only_row(webhook_db).status != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop(timeout=5)

    assert only_row(webhook_db).status == "done"


# Bug-fix phases -----------------------------------------------------------------------


def add_phase(webhook_db, rock_id, ends_in_days, status="active"):
    now = utcnow()
    data = {
        "rock_id": rock_id,
        "sandbox_id": f"sandbox-{rock_id}",
        "started_at": (now - timedelta(days=7)).isoformat(),
        "scheduled_end": (now + timedelta(days=ends_in_days)).isoformat(),
        "max_duration_days": 28,
        "extensions": [],
    }
    with webhook_db.transaction() as session:
        session.add(
            BugFixPhase(
                rock_id=rock_id,
                data_json=dump_json(data),
                status=status,
                updated_at=now,
            )
        )


def test_expired_phases_complete_and_owe_a_sandbox_stop(
    settings, webhook_db, runtime_db, make_worker
):
    add_phase(webhook_db, "widgets-pr7", -0.01)
    add_phase(webhook_db, "widgets-pr8", 2)
    add_phase(webhook_db, "widgets-pr9", -1, status="completed")
    events = EventLog(settings, runtime_db)

    completed = complete_expired_phases(webhook_db, events)

    assert completed == ["widgets-pr7"]
    with webhook_db.reader() as session:
        statuses = {
            rock: status
            for rock, status in session.execute(
                select(BugFixPhase.rock_id, BugFixPhase.status)
            )
        }
    assert statuses == {
        "widgets-pr7": "completed",
        "widgets-pr8": "active",
        "widgets-pr9": "completed",
    }
    (row,) = outbox_rows(webhook_db)
    assert (row.kind, row.dedupe_key) == (
        "runtime_sandbox_job",
        "sandbox:sandbox-widgets-pr7:stop",
    )
    (event,) = events_named(runtime_db, "bug_fix_phase_completed")
    assert event["rock_id"] == "widgets-pr7"

    drain(make_worker())

    with runtime_db.reader() as session:
        (job,) = session.scalars(select(RunRow))
    assert (job.type, job.target_id, job.source) == (
        "sandbox_stop",
        "sandbox-widgets-pr7",
        "webhook",
    )


def test_worker_checks_bugfix_phases_once_per_period(make_worker, webhook_db):
    worker = make_worker(bugfix_check_sec=3600)
    worker.check_bugfix_phases_if_due()
    add_phase(webhook_db, "widgets-pr7", -1)

    worker.check_bugfix_phases_if_due()

    assert outbox_rows(webhook_db) == []


# End to end ---------------------------------------------------------------------------


def test_fourth_rejection_ends_with_pr_closed_commented_and_issue_opened(
    httpserver, settings_factory
):
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    respond(httpserver, f"{REPO}/pulls/7", "PATCH", 201, "pull_get.json")
    respond(httpserver, f"{REPO}/labels", "GET", 200, "labels_list.json")
    httpserver.expect_request(f"{REPO}/labels", method="POST").respond_with_handler(
        create_label_handler(first_id=6)
    )
    httpserver.expect_request(f"{REPO}/issues", method="POST").respond_with_handler(
        create_issue_handler()
    )
    app = create_webhook_app(
        settings_factory(
            gitea_url=httpserver.url_for("/").rstrip("/"),
            gitea_token=TOKEN,
            gitea_bot_login_raw=BOT,
        )
    )
    services = app.extensions["orket"]
    client = app.test_client()
    reasons = [
        "Quote the CSV fields",
        "Add a test",
        "Handle empty input",
        "Still broken",
    ]
    try:
        for n, reason in enumerate(reasons):
            post(client, *rejection(f"reviewer{n}", reason))
        worker = OutboxWorker(
            services.settings, services.webhook_db, services.runtime_db, services.events
        )
        drain(worker)
        worker.stop()
    finally:
        services.stop()

    assert [row.status for row in outbox_rows(services.webhook_db)] == ["done"] * 4
    calls = [(r.method, r.path) for r, _ in httpserver.log]
    assert calls == [
        ("POST", COMMENTS),
        ("PATCH", f"{REPO}/pulls/7"),
        ("POST", COMMENTS),
        ("GET", f"{REPO}/labels"),
        ("POST", f"{REPO}/labels"),
        ("POST", f"{REPO}/labels"),
        ("POST", f"{REPO}/issues"),
    ]
    (issue,) = requests_to(httpserver, "POST", f"{REPO}/issues")
    sent = json.loads(issue.get_data())
    assert sent["labels"] == [6, 7]
    for n, reason in enumerate(reasons, start=1):
        assert f"**Cycle {n}**" in sent["body"]
        assert reason in sent["body"]


def test_a_row_whose_execution_crashes_is_retried_not_lost(
    worker, webhook_db, runtime_db, monkeypatch
):
    def broken(self, row):
        raise RuntimeError("bug")

    monkeypatch.setattr(GiteaCalls, "execute", broken)
    owe(webhook_db, comment())

    worker.run_once()

    row = only_row(webhook_db)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "internal error: RuntimeError"
    assert events_named(runtime_db, "internal_error")[0]["where"] == "outbox"


# Surviving a restart ------------------------------------------------------------------


@pytest.mark.slow
def test_owed_calls_survive_a_killed_process_and_are_made_once(
    httpserver, settings_factory, live_server, webhook_db
):
    respond(httpserver, COMMENTS, "POST", 201, "comment_created.json")
    respond(httpserver, COMMENTS, "GET", 200, body=[])
    respond(httpserver, f"{REPO}/pulls/7", "PATCH", 201, "pull_get.json")
    respond(httpserver, f"{REPO}/labels", "GET", 200, "labels_list.json")
    httpserver.expect_request(f"{REPO}/labels", method="POST").respond_with_handler(
        create_label_handler()
    )
    httpserver.expect_request(f"{REPO}/issues", method="POST").respond_with_handler(
        create_issue_handler()
    )
    common = {
        "gitea_url": httpserver.url_for("/").rstrip("/"),
        "gitea_bot_login_raw": BOT,
        "review_escalate_at": 1,
        "review_reject_at": 2,
        "outbox_poll_ms": 50,
    }
    without_token = live_server("webhook", settings_factory(**common))
    for reviewer in ("bob", "carol"):
        headers, body = rejection(reviewer, f"{reviewer} says no")
        answer = requests.post(
            without_token.url + "/webhook/gitea", data=body, headers=headers, timeout=5
        )
        assert answer.json()["status"] == "accepted"

    without_token.kill()

    owed = outbox_rows(webhook_db)
    assert [(row.kind, row.status, row.attempts) for row in owed] == [
        ("comment", "pending", 0),
        ("close_pr", "pending", 0),
        ("comment", "pending", 0),
        ("create_requirements_issue", "pending", 0),
    ]
    assert len(httpserver.log) == 0

    live_server("webhook", settings_factory(**common, gitea_token=TOKEN))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(row.status == "done" for row in outbox_rows(webhook_db)):
            break
        time.sleep(0.1)

    assert [row.status for row in outbox_rows(webhook_db)] == ["done"] * 4
    assert len(requests_to(httpserver, "POST", COMMENTS)) == 2
    assert len(requests_to(httpserver, "PATCH", f"{REPO}/pulls/7")) == 1
    assert len(requests_to(httpserver, "POST", f"{REPO}/issues")) == 1
