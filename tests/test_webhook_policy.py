"""The review-cycle policy (WH-7): counts, thresholds, the bot, merges and the
`ISSUE-...` flows into the runtime database."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.models.base import dump_json, load_json, utcnow
from app.models.runtime import CardTransaction, Comment, Issue
from app.models.runtime import Session as RunRow
from app.models.webhook import BugFixPhase, GiteaOutbox, ReviewFailure
from app.webhook.messages import comment_marker, requirements_issue_title
from app.webhook.outbox import OutboxWorker
from tests.webhook_support import (
    BOT,
    PR_KEY,
    SECOND_HEAD,
    add_card,
    cycle,
    drain,
    events_named,
    fixture_delivery,
    outbox_rows,
    post,
    rejection,
    titled,
    variant,
)


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


def drain_runtime_rows(services):
    """Work the outbox once without Gitea credentials: only runtime rows run."""
    worker = OutboxWorker(
        services.settings, services.webhook_db, services.runtime_db, services.events
    )
    try:
        return drain(worker)
    finally:
        worker.stop()


def reject_times(client, count, start=1):
    return [
        post(client, *rejection(f"reviewer{n}", f"Reason number {n}")).json
        for n in range(start, start + count)
    ]


def failures(services):
    with services.webhook_db.reader() as session:
        query = select(ReviewFailure).order_by(ReviewFailure.cycle_number)
        return list(session.scalars(query))


# Rejections ---------------------------------------------------------------------------


def test_rejections_below_escalation_only_count(client, services):
    answers = reject_times(client, 2)

    assert [a["message"] for a in answers] == [
        "PR #7 rejected (cycle 1/4)",
        "PR #7 rejected (cycle 2/4)",
    ]
    assert all(a["actions"] == ["cycle_incremented"] for a in answers)
    assert (
        cycle(services.webhook_db).status,
        cycle(services.webhook_db).cycle_count,
    ) == (
        "active",
        2,
    )
    assert [(f.cycle_number, f.reviewer, f.reason) for f in failures(services)] == [
        (1, "reviewer1", "Reason number 1"),
        (2, "reviewer2", "Reason number 2"),
    ]
    assert outbox_rows(services.webhook_db) == []


def test_third_rejection_escalates_to_the_architect(client, services):
    answers = reject_times(client, 3)

    third = answers[-1]
    assert third["status"] == "accepted"
    assert third["actions"] == ["cycle_incremented", "escalation_comment_queued"]
    assert third["message"] == "PR #7 escalated to architect"
    assert cycle(services.webhook_db).status == "escalated"
    (row,) = outbox_rows(services.webhook_db)
    assert (row.kind, row.method, row.status) == ("comment", "POST", "pending")
    assert row.path == "/api/v1/repos/acme/widgets/issues/7/comments"
    assert row.dedupe_key == f"{third['delivery_id']}:comment"
    text = load_json(row.body, {})["body"]
    assert "@lead_architect" in text
    assert text.endswith(comment_marker(row.dedupe_key))
    assert events_named(services.runtime_db, "pr_escalated") == [
        {"pr_key": PR_KEY, "cycle": 3}
    ]


def test_fourth_rejection_closes_pr_comments_and_opens_requirements_issue(
    client, services
):
    answers = reject_times(client, 4)

    fourth = answers[-1]
    assert fourth["actions"] == [
        "cycle_incremented",
        "pr_close_queued",
        "rejection_comment_queued",
        "requirements_issue_queued",
    ]
    assert fourth["message"] == "PR #7 auto-rejected after 4 cycles"
    assert cycle(services.webhook_db).status == "rejected"
    rows = outbox_rows(services.webhook_db)
    assert [row.kind for row in rows] == [
        "comment",
        "close_pr",
        "comment",
        "create_requirements_issue",
    ]
    close, final, issue = rows[1:]
    assert (close.method, close.path) == ("PATCH", "/api/v1/repos/acme/widgets/pulls/7")
    assert load_json(close.body, {}) == {"state": "closed"}
    assert "auto" in load_json(final.body, {})["body"].lower()
    body = load_json(issue.body, {})
    assert body["title"] == requirements_issue_title(7, 4)
    assert body["title"] == "Requirements Review: PR #7 failed after 4 cycles"
    for n in range(1, 5):
        assert f"**Cycle {n}**" in body["body"]
        assert f"@reviewer{n}: Reason number {n}" in body["body"]
    assert [label["name"] for label in body["labels"]] == [
        "requirements-review",
        "auto-rejected",
    ]
    assert events_named(services.runtime_db, "pr_rejected") == [
        {"pr_key": PR_KEY, "cycle": 4}
    ]


def test_fifth_rejection_changes_nothing(client, services):
    reject_times(client, 4)
    rows_before = len(outbox_rows(services.webhook_db))

    (fifth,) = reject_times(client, 1, start=5)

    assert fifth["status"] == "ignored"
    assert fifth["actions"] == ["rejection_ignored"]
    assert cycle(services.webhook_db).cycle_count == 4
    assert len(outbox_rows(services.webhook_db)) == rows_before
    assert len(failures(services)) == 4


def test_thresholds_come_from_the_settings(make_app):
    app = make_app(review_escalate_at=1, review_reject_at=2)
    client = app.test_client()

    first, second = reject_times(client, 2)

    assert first["message"] == "PR #7 escalated to architect"
    assert second["message"] == "PR #7 auto-rejected after 2 cycles"


def test_a_redelivered_rejection_is_counted_once(client, services):
    delivery = rejection("bob", "same")

    post(client, *delivery)
    post(client, *delivery)

    assert cycle(services.webhook_db).cycle_count == 1


def test_rejections_are_counted_per_pull_request(client, services):
    post(client, *rejection(number=7))
    post(client, *rejection(reason="first", number=8))
    post(client, *rejection(reason="second", number=8))

    assert cycle(services.webhook_db, "acme/widgets#7").cycle_count == 1
    assert cycle(services.webhook_db, "acme/widgets#8").cycle_count == 2


# The bot ------------------------------------------------------------------------------


@pytest.mark.parametrize("login", [BOT, "Orket-Bot", "ORKET-BOT"])
def test_rejection_by_the_bot_is_not_counted_in_any_case(client, services, login):
    response = post(client, *rejection(login, "bot says no"))

    assert response.json["actions"] == ["rejection_ignored"]
    assert response.json["status"] == "ignored"
    assert cycle(services.webhook_db).cycle_count == 0


def test_bot_login_defaults_to_the_admin_user(make_app):
    client = make_app(gitea_bot_login_raw=None, gitea_admin_user="Orket").test_client()

    response = post(client, *rejection("orket", "self review"))

    assert response.json["actions"] == ["rejection_ignored"]


def test_approval_by_the_bot_does_not_merge(client, services):
    def by_bot(payload):
        payload["sender"]["login"] = BOT

    response = post(client, *variant("review_approved", by_bot))

    assert response.json["actions"] == ["approval_ignored"]
    assert outbox_rows(services.webhook_db) == []


def test_close_by_the_bot_leaves_the_cycle(client, services):
    def by_bot(payload):
        payload["sender"]["login"] = BOT

    post(client, *rejection())
    response = post(client, *variant("pr_closed", by_bot))

    assert response.json["status"] == "ignored"
    assert cycle(services.webhook_db).status == "active"


def test_merge_by_the_bot_still_counts(client, services):
    response = post(client, *fixture_delivery("pr_merged"))

    assert response.json["actions"] == ["cycle_merged", "sandbox_deploy_queued"]
    assert events_named(services.runtime_db, "pr_merged") == [
        {"pr_key": PR_KEY, "merged_by": BOT}
    ]


# Approval and merge -------------------------------------------------------------------


def test_approval_queues_a_merge_pinned_to_the_approved_head(client, services):
    response = post(client, *fixture_delivery("review_approved"))

    (row,) = outbox_rows(services.webhook_db)
    assert (row.kind, row.method) == ("merge", "POST")
    assert row.path == "/api/v1/repos/acme/widgets/pulls/7/merge"
    assert load_json(row.body, {}) == {
        "Do": "merge",
        "MergeMessageField": "Auto-merged PR #7 after approval",
        "delete_branch_after_merge": True,
        "head_commit_id": SECOND_HEAD,
    }
    assert row.dedupe_key == f"{response.json['delivery_id']}:merge"
    assert events_named(services.runtime_db, "pr_merge_requested") == [
        {"pr_key": PR_KEY, "head_sha": SECOND_HEAD}
    ]


def test_approval_without_a_head_sha_merges_unpinned(client, services):
    def no_head(payload):
        payload["pull_request"]["head"] = None

    post(client, *variant("review_approved", no_head))

    (row,) = outbox_rows(services.webhook_db)
    assert "head_commit_id" not in load_json(row.body, {})


def test_approval_of_an_auto_rejected_pr_is_ignored(make_app):
    app = make_app(review_escalate_at=1, review_reject_at=2)
    client = app.test_client()
    reject_times(client, 2)

    response = post(client, *fixture_delivery("review_approved"))

    assert response.json["actions"] == ["approval_ignored"]


def test_merge_marks_the_cycle_starts_the_bugfix_phase_and_owes_a_deploy(
    client, services
):
    before = utcnow()
    post(client, *rejection())

    response = post(client, *fixture_delivery("pr_merged"))

    assert response.json["message"] == "PR #7 merged, sandbox deployment queued"
    assert cycle(services.webhook_db).status == "merged"
    with services.webhook_db.reader() as session:
        phase = session.get(BugFixPhase, "widgets-pr7")
    data = load_json(phase.data_json, {})
    assert phase.status == "active"
    ends = datetime.fromisoformat(data["scheduled_end"])
    assert timedelta(days=7) <= ends - before < timedelta(days=7, minutes=1)
    assert data["max_duration_days"] == 28
    assert data["extensions"] == []
    (row,) = outbox_rows(services.webhook_db)
    assert (row.kind, row.path) == (
        "runtime_sandbox_job",
        "sandbox:sandbox-widgets-pr7",
    )
    job = load_json(row.body, {})
    assert job["kind"] == "sandbox_deploy"
    assert job["sandbox_id"] == "sandbox-widgets-pr7"
    params = job["params"]
    assert params["tech_stack"] == "fastapi-react-postgres"
    assert params["clone_url"] == "https://git.example.test/acme/widgets.git"
    assert params["commit_sha"]
    assert params["rock_id"] == "widgets-pr7"
    (started,) = events_named(services.runtime_db, "bug_fix_phase_started")
    assert started["rock_id"] == "widgets-pr7"


def test_merge_of_an_unknown_pr_creates_its_cycle(client, services):
    post(client, *fixture_delivery("pr_merged"))

    assert cycle(services.webhook_db).status == "merged"


def test_merged_pr_queues_a_sandbox_deploy_job_in_the_runtime_database(
    client, services
):
    post(client, *fixture_delivery("pr_merged"))

    drain_runtime_rows(services)

    with services.runtime_db.reader() as session:
        (job,) = session.scalars(select(RunRow).where(RunRow.type == "sandbox_deploy"))
    assert (job.status, job.target_id, job.source) == (
        "queued",
        "sandbox-widgets-pr7",
        "webhook",
    )
    assert load_json(job.params_json, {})["rock_id"] == "widgets-pr7"
    assert [row.status for row in outbox_rows(services.webhook_db)] == ["done"]


def test_close_and_reopen_keep_the_count(client, services):
    post(client, *rejection())

    closed = post(client, *fixture_delivery("pr_closed"))
    closed_status = cycle(services.webhook_db).status
    reopened = post(client, *fixture_delivery("pr_reopened"))

    assert closed.json["actions"] == ["cycle_closed"]
    assert closed_status == "closed"
    assert reopened.json["actions"] == ["cycle_reopened"]
    assert (
        cycle(services.webhook_db).status,
        cycle(services.webhook_db).cycle_count,
    ) == (
        "active",
        1,
    )


def test_rejection_of_a_closed_pr_is_ignored(client, services):
    post(client, *fixture_delivery("pr_closed"))

    response = post(client, *rejection())

    assert response.json["actions"] == ["rejection_ignored"]
    assert cycle(services.webhook_db).cycle_count == 0


# ISSUE-... flows ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pr_opened", "pr_synchronized"])
def test_pr_naming_a_card_moves_it_to_review_and_queues_a_review_run(
    client, services, name
):
    add_card(services.runtime_db, "ISSUE-ab12cd34", status="in_progress")

    response = post(client, *titled(name, "ISSUE-ab12cd34: add CSV export"))

    assert response.json["status"] == "accepted"
    assert response.json["actions"] == ["card_to_code_review", "review_run_queued"]
    assert response.json["message"] == "PR #7 review triggered for ISSUE-ab12cd34"
    assert [row.kind for row in outbox_rows(services.webhook_db)] == [
        "runtime_card_move",
        "runtime_queue_run",
    ]

    drain_runtime_rows(services)

    with services.runtime_db.reader() as session:
        card_status = session.get(Issue, "ISSUE-ab12cd34").status
        history = list(session.scalars(select(CardTransaction)))
        (run,) = session.scalars(select(RunRow))
    assert card_status == "code_review"
    assert [(h.role, h.from_status, h.to_status) for h in history] == [
        ("webhook", "in_progress", "code_review")
    ]
    assert (run.type, run.target_id, run.source, run.status) == (
        "issue",
        "ISSUE-ab12cd34",
        "webhook",
        "queued",
    )
    assert events_named(services.runtime_db, "card_to_code_review") == [
        {"issue_id": "ISSUE-ab12cd34", "pr_key": PR_KEY}
    ]
    (changed,) = events_named(services.runtime_db, "card_status_changed")
    assert (changed["from"], changed["to"], changed["by"]) == (
        "in_progress",
        "code_review",
        "webhook",
    )
    (queued,) = events_named(services.runtime_db, "review_run_queued")
    assert queued["run_id"] == run.id
    assert {row.status for row in outbox_rows(services.webhook_db)} == {"done"}


def test_card_reference_falls_back_to_the_id_after_issue_prefix(client, services):
    add_card(services.runtime_db, "DEMO-1", status="ready")

    response = post(client, *titled("pr_opened", "Fix ISSUE-DEMO-1 rounding"))

    assert response.json["message"] == "PR #7 review triggered for DEMO-1"


def test_unknown_card_is_reported(client, services):
    response = post(client, *titled("pr_opened", "ISSUE-NOPE42 something"))

    assert response.json["status"] == "ignored"
    assert response.json["actions"] == ["card_not_found"]
    assert outbox_rows(services.webhook_db) == []


@pytest.mark.parametrize("status", ["done", "canceled", "archived"])
def test_finished_card_is_not_reviewed_again(client, services, status):
    add_card(services.runtime_db, "ISSUE-DONE1", status=status)

    response = post(client, *titled("pr_opened", "ISSUE-DONE1"))

    assert response.json["status"] == "ignored"
    assert outbox_rows(services.webhook_db) == []


def test_card_already_in_review_only_gets_the_run(client, services):
    add_card(services.runtime_db, "ISSUE-R1", status="code_review")

    response = post(client, *titled("pr_synchronized", "ISSUE-R1"))

    assert response.json["actions"] == ["review_run_queued"]


def test_review_run_is_skipped_while_the_build_has_an_active_run(client, services):
    add_card(services.runtime_db, "ISSUE-B1", status="ready", build_id="build-busy")
    with services.runtime_db.transaction() as session:
        session.add(
            RunRow(
                id="abcd1234",
                type="epic",
                status="running",
                target_id="busy",
                build_id="build-busy",
                builds_json=dump_json(["build-busy"]),
                source="api",
                queued_at=utcnow(),
            )
        )

    response = post(client, *titled("pr_opened", "ISSUE-B1"))

    assert response.json["actions"] == [
        "card_to_code_review",
        "review_run_skipped_active",
    ]
    assert [row.kind for row in outbox_rows(services.webhook_db)] == [
        "runtime_card_move"
    ]


def test_pr_comment_on_a_referenced_card_becomes_a_card_comment(client, services):
    add_card(services.runtime_db, "ISSUE-C1")

    response = post(client, *titled("pr_comment", "ISSUE-C1 export"))
    drain_runtime_rows(services)

    assert response.json["actions"] == ["card_comment_added"]
    with services.runtime_db.reader() as session:
        (comment,) = session.scalars(select(Comment))
    assert comment.issue_id == "ISSUE-C1"
    assert comment.content.startswith("[gitea] alice: ")
    assert events_named(services.runtime_db, "card_comment_added")[0]["issue_id"] == (
        "ISSUE-C1"
    )


def test_pr_comment_by_the_bot_is_ignored(client, services):
    add_card(services.runtime_db, "ISSUE-C2")

    def by_bot(payload):
        payload["pull_request"]["title"] = "ISSUE-C2"
        payload["issue"]["title"] = "ISSUE-C2"
        payload["sender"]["login"] = BOT

    response = post(client, *variant("pr_comment", by_bot))

    assert response.json["status"] == "ignored"
    assert outbox_rows(services.webhook_db) == []


def test_runtime_writes_are_idempotent_when_repeated(client, services):
    add_card(services.runtime_db, "ISSUE-I1", status="ready")
    post(client, *titled("pr_opened", "ISSUE-I1"))
    drain_runtime_rows(services)

    # As if the worker died after the writes but before recording them.
    with services.webhook_db.transaction() as session:
        session.execute(
            update(GiteaOutbox).values(status="pending", next_attempt_at=utcnow())
        )
    drain_runtime_rows(services)

    with services.runtime_db.reader() as session:
        assert len(list(session.scalars(select(RunRow)))) == 1
        assert len(list(session.scalars(select(CardTransaction)))) == 1
