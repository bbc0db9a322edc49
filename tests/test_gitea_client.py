import base64
import json
import logging
import socket
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from werkzeug.wrappers import Response

from app.config import Settings
from app.gitea import (
    MAX_RESPONSE_BYTES,
    GiteaBadResponse,
    GiteaClient,
    GiteaUnavailable,
    merge_request_body,
)
from app.webhook.messages import (
    comment_marker,
    escalation_comment,
    final_rejection_comment,
    merge_failure_comment,
    requirements_issue_body,
    requirements_issue_title,
    sandbox_comment,
)
from tests.conftest import GITEA_FIXTURES

FIXTURES = GITEA_FIXTURES
API = FIXTURES / "api"
REPO = "/api/v1/repos/acme/widgets"
TOKEN = "tok-3f9a-secret"
HEAD_SHA = "5d179900a1850d9dc91c4dea25ff9e16c6d09232"


def api_bytes(name):
    return (API / name).read_bytes()


def serve(httpserver, path, method, fixture=None, status=200, **match):
    body = api_bytes(fixture) if fixture else b""
    httpserver.expect_request(path, method=method, **match).respond_with_data(
        body, status=status, content_type="application/json"
    )


@pytest.fixture
def client(httpserver):
    with GiteaClient(httpserver.url_for("/"), token=TOKEN, timeout_sec=5) as gitea:
        yield gitea


def test_token_is_sent_as_a_token_authorization_header(httpserver, client):
    serve(
        httpserver,
        f"{REPO}/pulls/7",
        "GET",
        "pull_get.json",
        headers={"Authorization": f"token {TOKEN}"},
    )

    response = client.get_pull("acme", "widgets", 7)

    assert response.status == 200
    assert response.json["head"]["sha"] == HEAD_SHA


def test_without_token_basic_auth_uses_the_admin_account(httpserver, tmp_path):
    expected = "Basic " + base64.b64encode(b"Orket:pw-123").decode()
    serve(
        httpserver,
        f"{REPO}/pulls/7",
        "GET",
        "pull_get.json",
        headers={"Authorization": expected},
    )
    settings = Settings(
        data_dir=tmp_path,
        gitea_url=httpserver.url_for("/"),
        gitea_admin_password="pw-123",
    )

    with GiteaClient.from_settings(settings) as gitea:
        assert gitea.has_credentials
        assert gitea.get_pull("acme", "widgets", 7).status == 200


def test_token_wins_over_basic_auth(httpserver, tmp_path):
    serve(
        httpserver,
        f"{REPO}/pulls/7",
        "GET",
        "pull_get.json",
        headers={"Authorization": "token t1"},
    )
    settings = Settings(
        data_dir=tmp_path,
        gitea_url=httpserver.url_for("/"),
        gitea_token="t1",
        gitea_admin_password="pw",
    )

    with GiteaClient.from_settings(settings) as gitea:
        assert gitea.get_pull("acme", "widgets", 7).status == 200


def test_without_credentials_no_authorization_is_sent(httpserver):
    serve(httpserver, f"{REPO}/pulls/7", "GET", "pull_get.json")

    with GiteaClient(httpserver.url_for("/")) as gitea:
        assert not gitea.has_credentials
        gitea.get_pull("acme", "widgets", 7)

    [(request, _)] = httpserver.log
    assert "Authorization" not in request.headers


def test_create_comment_posts_the_body(httpserver, client):
    serve(
        httpserver,
        f"{REPO}/issues/7/comments",
        "POST",
        "comment_created.json",
        status=201,
        json={"body": "hello <!-- orket:k -->"},
    )

    response = client.create_comment("acme", "widgets", 7, "hello <!-- orket:k -->")

    assert (response.status, response.ok, response.json["id"]) == (201, True, 314)


def test_close_pr_answers_201_with_the_pull(httpserver, client):
    serve(
        httpserver,
        f"{REPO}/pulls/7",
        "PATCH",
        "pull_get.json",
        status=201,
        json={"state": "closed"},
    )

    response = client.close_pr("acme", "widgets", 7)

    assert response.status == 201
    assert response.ok


def test_successful_merge_has_an_empty_body(httpserver, client):
    body = merge_request_body(7, HEAD_SHA)
    serve(httpserver, f"{REPO}/pulls/7/merge", "POST", status=200, json=body)

    response = client.merge_pr("acme", "widgets", 7, body)

    assert (response.status, response.json, response.text) == (200, None, "")
    assert response.ok


def test_merge_body_matches_wh8():
    assert merge_request_body(7, HEAD_SHA) == {
        "Do": "merge",
        "MergeMessageField": "Auto-merged PR #7 after approval",
        "delete_branch_after_merge": True,
        "head_commit_id": HEAD_SHA,
    }
    assert "head_commit_id" not in merge_request_body(7, None)


@pytest.mark.parametrize(
    "fixture, status, message",
    [
        ("merge_405_try_again.json", 405, "Please try again later"),
        ("merge_405_already_merged.json", 405, ""),
        ("merge_404_closed.json", 404, "The target couldn't be found."),
        ("merge_409_head_out_of_date.json", 409, "head out of date"),
        ("merge_422_missing_do.json", 422, "[Do]: Required"),
    ],
)
def test_merge_errors_are_answers_not_exceptions(
    httpserver, client, fixture, status, message
):
    serve(httpserver, f"{REPO}/pulls/7/merge", "POST", fixture, status=status)

    response = client.merge_pr("acme", "widgets", 7, merge_request_body(7, HEAD_SHA))

    assert response.status == status
    assert not response.ok
    assert response.message == message
    assert response.text == api_bytes(fixture).decode()


@pytest.mark.parametrize("status", [204, 404])
def test_merge_status_reports_the_status(httpserver, client, status):
    serve(httpserver, f"{REPO}/pulls/7/merge", "GET", status=status)

    assert client.merge_status("acme", "widgets", 7).status == status


def test_server_errors_come_back_with_their_text(httpserver, client):
    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_data(
        "upstream exploded", status=502, content_type="text/plain"
    )

    response = client.get_pull("acme", "widgets", 7)

    assert (response.status, response.json) == (502, None)
    assert response.message == "upstream exploded"


def synthetic_labels(first_id, count):
    return [
        {"id": n, "name": f"label-{n}", "color": "ededed"}
        for n in range(first_id, first_id + count)
    ]


def test_list_labels_reads_every_page(httpserver, client):
    page_one = json.dumps(synthetic_labels(100, 50))
    httpserver.expect_request(
        f"{REPO}/labels", method="GET", query_string={"limit": "50", "page": "1"}
    ).respond_with_data(
        page_one, headers={"X-Total-Count": "55"}, content_type="application/json"
    )
    httpserver.expect_request(
        f"{REPO}/labels", method="GET", query_string={"limit": "50", "page": "2"}
    ).respond_with_data(
        api_bytes("labels_list.json"),
        headers={"X-Total-Count": "55"},
        content_type="application/json",
    )

    response = client.list_labels("acme", "widgets")

    assert response.status == 200
    assert len(response.json) == 55
    assert [label["name"] for label in response.json[-5:]] == [
        "bug",
        "enhancement",
        "escalated",
        "wontfix",
        "priority/high",
    ]
    assert len(httpserver.log) == 2


def test_short_page_without_total_ends_the_listing(httpserver, client):
    serve(httpserver, f"{REPO}/labels", "GET", "labels_list.json")

    response = client.list_labels("acme", "widgets")

    assert len(response.json) == 5
    assert len(httpserver.log) == 1


def test_endpoint_that_ignores_paging_is_read_once(httpserver, client):
    # Gitea's issue-comment list returns everything whatever the page asked for.
    comments = [{"id": n, "body": f"c{n}"} for n in range(1, 51)]
    httpserver.expect_request(f"{REPO}/issues/7/comments").respond_with_json(comments)

    response = client.list_comments("acme", "widgets", 7)

    assert [c["id"] for c in response.json] == list(range(1, 51))
    assert len(httpserver.log) == 2  # the repeat on page 2 stops the walk


def test_list_error_is_returned_as_is(httpserver, client):
    serve(httpserver, f"{REPO}/labels", "GET", "merge_404_closed.json", status=404)

    response = client.list_labels("acme", "widgets")

    assert response.status == 404
    assert response.message == "The target couldn't be found."


def test_create_label_and_issue_use_label_ids(httpserver, client):
    serve(
        httpserver,
        f"{REPO}/labels",
        "POST",
        "label_created.json",
        status=201,
        json={"name": "requirements-review", "color": "#0075ca", "description": ""},
    )
    serve(
        httpserver,
        f"{REPO}/issues",
        "POST",
        "issue_created.json",
        status=201,
        json={"title": "T", "body": "B", "labels": [6]},
    )

    label = client.create_label("acme", "widgets", "requirements-review", "#0075ca")
    issue = client.create_issue("acme", "widgets", "T", "B", [label.json["id"]])

    assert (label.status, label.json["id"]) == (201, 6)
    assert (issue.status, issue.json["number"]) == (201, 12)


def test_search_open_issues_keeps_exact_title_matches(httpserver, client):
    title = "Requirements Review: PR #9 failed after 4 cycles"
    exact = json.loads(api_bytes("issue_created.json"))
    near = {**exact, "id": 64, "number": 13, "title": title + " (old)"}
    httpserver.expect_request(
        f"{REPO}/issues",
        method="GET",
        query_string={
            "state": "open",
            "type": "issues",
            "q": title,
            "limit": "50",
            "page": "1",
        },
    ).respond_with_json([near, exact])

    response = client.search_open_issues("acme", "widgets", title)

    assert [issue["number"] for issue in response.json] == [12]


def test_create_hook_registers_an_active_json_hook(httpserver, client):
    httpserver.expect_request(
        f"{REPO}/hooks",
        method="POST",
        json={
            "type": "gitea",
            "config": {
                "url": "https://orket.example.test/webhook/gitea",
                "content_type": "json",
                "secret": "s3",
            },
            "events": [
                "pull_request_only",
                "pull_request_sync",
                "pull_request_review",
                "pull_request_comment",
            ],
            "active": True,
        },
    ).respond_with_json({"id": 3, "active": True}, status=201)

    response = client.create_hook(
        "acme", "widgets", "https://orket.example.test/webhook/gitea", "s3"
    )

    assert (response.status, response.json["id"]) == (201, 3)


def test_writes_do_not_follow_redirects(httpserver, client):
    httpserver.expect_request(f"{REPO}/issues/7/comments").respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    serve(httpserver, "/elsewhere", "POST", "comment_created.json", status=201)

    response = client.create_comment("acme", "widgets", 7, "hi")

    assert response.status == 307
    assert [request.path for request, _ in httpserver.log] == [
        f"{REPO}/issues/7/comments"
    ]


def test_reads_follow_redirects(httpserver, client):
    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/moved")}
    )
    serve(httpserver, "/moved", "GET", "pull_get.json")

    assert client.get_pull("acme", "widgets", 7).status == 200


def test_response_of_exactly_one_mebibyte_is_read(httpserver, client):
    padding = MAX_RESPONSE_BYTES - len('{"number": 7, "pad": ""}')
    body = '{"number": 7, "pad": "' + "x" * padding + '"}'
    assert len(body) == MAX_RESPONSE_BYTES
    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_data(
        body, content_type="application/json"
    )

    assert client.get_pull("acme", "widgets", 7).json["number"] == 7


def test_declared_oversized_response_is_refused(httpserver, client):
    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_data(
        b"x" * (MAX_RESPONSE_BYTES + 1), content_type="application/json"
    )

    with pytest.raises(GiteaBadResponse, match="1 MiB"):
        client.get_pull("acme", "widgets", 7)


def test_streamed_oversized_response_is_refused(httpserver, client):
    def endless(_request):
        chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        return Response(chunks, content_type="application/json")

    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_handler(endless)

    with pytest.raises(GiteaBadResponse, match="1 MiB"):
        client.get_pull("acme", "widgets", 7)


@pytest.mark.parametrize(
    "call, path, method, body",
    [
        ("create_comment", "/issues/7/comments", "POST", b"[]"),
        ("create_comment", "/issues/7/comments", "POST", b"not json"),
        ("get_pull", "/pulls/7", "GET", b'{"number": "7"}'),
        ("list_labels", "/labels", "GET", b'{"id": 1}'),
        ("list_labels", "/labels", "GET", b'[{"id": 1}]'),
    ],
)
def test_success_with_the_wrong_shape_is_refused(
    httpserver, client, call, path, method, body
):
    httpserver.expect_request(REPO + path, method=method).respond_with_data(
        body, status=201 if method == "POST" else 200, content_type="application/json"
    )
    args = ("acme", "widgets") if call == "list_labels" else ("acme", "widgets", 7)
    if call == "create_comment":
        args += ("hi",)

    with pytest.raises(GiteaBadResponse, match="shape"):
        getattr(client, call)(*args)


def test_connection_refused_raises_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with GiteaClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_sec=2) as gitea:
        with pytest.raises(GiteaUnavailable, match="ConnectionError") as caught:
            gitea.get_pull("acme", "widgets", 7)

    assert TOKEN not in str(caught.value)


def test_slow_answer_raises_unavailable(httpserver):
    def slow(_request):
        time.sleep(1.0)
        return Response("{}", content_type="application/json")

    httpserver.expect_request(f"{REPO}/pulls/7").respond_with_handler(slow)

    with GiteaClient(httpserver.url_for("/"), token=TOKEN, timeout_sec=0.2) as gitea:
        with pytest.raises(GiteaUnavailable, match="Timeout"):
            gitea.get_pull("acme", "widgets", 7)


def test_credentials_never_reach_the_log(httpserver, caplog):
    caplog.set_level(logging.DEBUG)
    serve(
        httpserver,
        f"{REPO}/pulls/7/merge",
        "POST",
        "merge_409_head_out_of_date.json",
        status=409,
    )

    with GiteaClient(
        httpserver.url_for("/"), username="Orket", password="pw-xyz"
    ) as gitea:
        gitea.merge_pr("acme", "widgets", 7, merge_request_body(7, HEAD_SHA))
    with GiteaClient(httpserver.url_for("/"), token=TOKEN) as gitea:
        gitea.merge_pr("acme", "widgets", 7, merge_request_body(7, HEAD_SHA))

    assert "merge" in caplog.text
    assert TOKEN not in caplog.text
    assert "pw-xyz" not in caplog.text
    assert base64.b64encode(b"Orket:pw-xyz").decode() not in caplog.text


def test_names_are_escaped_into_single_path_segments(httpserver, client):
    httpserver.expect_request("/api/v1/repos/a b/w/x/pulls/7").respond_with_data(
        api_bytes("pull_get.json"), content_type="application/json"
    )

    assert client.get_pull("a b", "w/x", 7).status == 200
    [(request, _)] = httpserver.log
    assert request.environ["RAW_URI"] == "/api/v1/repos/a%20b/w%2Fx/pulls/7"


@pytest.mark.parametrize(
    "owner, repo, number",
    [
        ("..", "widgets", 7),
        ("acme", "", 7),
        ("acme", "widgets", 0),
        ("acme", "w", True),
    ],
)
def test_unsafe_path_parts_are_refused(client, owner, repo, number):
    with pytest.raises(ValueError):
        client.get_pull(owner, repo, number)


def test_generic_request_stays_under_the_api(httpserver, client):
    serve(
        httpserver,
        f"{REPO}/issues/7/comments",
        "POST",
        "comment_created.json",
        status=201,
    )

    response = client.request("post", f"{REPO}/issues/7/comments", {"body": "x"})

    assert response.status == 201
    with pytest.raises(ValueError):
        client.request("GET", "https://elsewhere.example.test/api/v1/x")


# Bodies of the Gitea calls (WH-8) ---------------------------------------------


def rejection(cycle, reviewer, reason, created_at):
    return SimpleNamespace(
        cycle_number=cycle, reviewer=reviewer, reason=reason, created_at=created_at
    )


ALL_BODIES = [
    lambda key: escalation_comment(7, 3, 4, key),
    lambda key: final_rejection_comment(7, 4, key),
    lambda key: requirements_issue_body(7, 4, [], key),
    lambda key: merge_failure_comment(7, 409, "head out of date", key),
    lambda key: sandbox_comment(7, "sandbox-widgets-pr7", "s", "http://a", None, key),
]


@pytest.mark.parametrize("build", ALL_BODIES)
def test_every_body_ends_with_its_marker(build):
    key = "4c5d6e7f-8091-4bac-9d2e-3f4a5b6c7d99:comment"

    assert build(key).endswith(f"\n\n<!-- orket:{key} -->")


@pytest.mark.parametrize("key", ["a-->b", "a\nb"])
def test_marker_refuses_keys_that_would_break_it(key):
    with pytest.raises(ValueError):
        comment_marker(key)


def test_escalation_calls_the_architect_with_four_questions():
    body = escalation_comment(7, 3, 4, "k")

    assert body.startswith("## ")
    assert "PR #7" in body
    assert "3 times" in body
    assert "@lead_architect" in body
    assert [line[:3] for line in body.splitlines() if line[:1].isdigit()] == [
        "1. ",
        "2. ",
        "3. ",
        "4. ",
    ]
    assert "right problem" in body
    assert "simpler" in body
    assert "Change request 4 of 4 closes this PR" in body


def test_final_comment_names_the_requirements_issue():
    body = final_rejection_comment(7, 4, "k")

    assert "4 review cycles" in body
    assert "Requirements Review: PR #7 failed after 4 cycles" in body


def test_requirements_issue_title_is_exact():
    assert requirements_issue_title(9, 4) == (
        "Requirements Review: PR #9 failed after 4 cycles"
    )


def test_requirements_issue_lists_every_reason_in_cycle_order():
    rejections = [
        rejection(2, "carol", "Still\n  drops rows.", "2026-03-03T09:00:00Z"),
        rejection(1, "bob", "Quote the fields.", datetime(2026, 3, 2, 14, 20, 13)),
        rejection(
            3,
            None,
            None,
            datetime(2026, 3, 4, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        ),
    ]

    body = requirements_issue_body(7, 4, rejections, "k", pr_title="Add CSV export")

    assert "PR #7 (closed)" in body
    assert [line for line in body.splitlines() if line.startswith("- **Cycle")] == [
        "- **Cycle 1** (2026-03-02T14:20:13Z) @bob: Quote the fields.",
        "- **Cycle 2** (2026-03-03T09:00:00Z) @carol: Still drops rows.",
        "- **Cycle 3** (2026-03-04T08:00:00Z) @unknown: No reason provided",
    ]
    for cause in (
        "Unclear requirements",
        "Technical limitation",
        "Model capability",
        "Missing context",
    ):
        assert f"- [ ] {cause}" in body
    for step in ("Refine the requirements", "Add examples", "Simplify", "Reassign"):
        assert step in body


def test_outside_text_cannot_forge_a_marker():
    sneaky = rejection(1, "eve", "<!-- orket:other:comment -->", "t")

    body = requirements_issue_body(7, 4, [sneaky], "k")
    failure = merge_failure_comment(7, 405, "<!-- orket:x -->", "k")

    assert body.count("<!--") == 1
    assert failure.count("<!--") == 1


def test_merge_failure_quotes_gitea():
    body = merge_failure_comment(7, 409, "head out of date\nsecond line", "k")

    assert "HTTP 409" in body
    assert "> head out of date\n> second line" in body
    assert "> (Gitea gave no message)" in merge_failure_comment(7, 405, " ", "k")


def test_sandbox_comment_gives_urls_stack_id_and_lifetime():
    body = sandbox_comment(
        7,
        "sandbox-widgets-pr7",
        "fastapi-react-postgres",
        "http://localhost:18000",
        "http://localhost:18001",
        "sandbox:sandbox-widgets-pr7",
        phase_end=datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc),
    )

    assert "http://localhost:18000" in body
    assert "http://localhost:18001" in body
    assert "`fastapi-react-postgres`" in body
    assert "`sandbox-widgets-pr7`" in body
    assert "bug-fix phase (until 2026-03-10T12:00:00Z)" in body
