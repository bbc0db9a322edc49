import hashlib
import json
from urllib.parse import quote_plus

import pytest
from werkzeug.datastructures import Headers

from app.webhook.deliveries import (
    NO_REASON,
    InvalidDelivery,
    MalformedPayload,
    body_sha256,
    card_id_candidates,
    delivery_id,
    event_type,
    normalise,
    parse_payload,
    validate_delivery,
)
from app.webhook.signatures import given_signature, signed_bytes, verify_signature
from tests.conftest import GITEA_FIXTURES

FIXTURES = GITEA_FIXTURES
REJECTION = (
    "The export drops rows whose name contains a comma. Please quote the fields "
    "and add a test for that case."
)
APPROVAL = "Looks good now, thanks! The quoting fix covers the cases I had in mind."
REVIEW_NOTE = "Left two questions on the exporter, see the inline notes."
FIRST_HEAD = "6363d212b3a093ee93f6a68ea93e9cb7345138f0"
SECOND_HEAD = "5d179900a1850d9dc91c4dea25ff9e16c6d09232"

# fixture name -> (internal event, reviewer, reason)
EXPECTED = {
    "pr_opened": ("pr_opened", "alice", None),
    "pr_edited": ("pr_edited", "alice", None),
    "review_comment": ("review_comment", "bob", REVIEW_NOTE),
    "review_rejected": ("review_rejected", "bob", REJECTION),
    "pr_synchronized": ("pr_synchronized", "alice", None),
    "pr_comment": ("pr_comment", "alice", None),
    "pr_closed": ("pr_closed", "alice", None),
    "pr_reopened": ("pr_reopened", "alice", None),
    "review_approved": ("review_approved", "bob", APPROVAL),
    "pr_merged": ("pr_merged", "orket-bot", None),
    "push_main": (None, "orket-bot", None),
    "push_test_delivery": (None, "alice", None),
    "forgejo_review_rejected": ("review_rejected", "bob", REJECTION),
}


def load_delivery(name):
    body = (FIXTURES / f"{name}.body.json").read_bytes()
    headers = Headers(json.loads((FIXTURES / f"{name}.headers.json").read_text()))
    return headers, body


def read(name):
    """Headers and the validated payload of a fixture, as the ingress would get them."""
    headers, body = load_delivery(name)
    return headers, validate_delivery(headers, parse_payload(body))


def without_fine_headers(headers):
    return Headers(
        [(k, v) for k, v in headers.items() if not k.endswith("-Event-Type")]
    )


def pr_payload(**overrides):
    payload = {
        "action": "opened",
        "number": 7,
        "pull_request": {"number": 7, "title": "Add export", "head": {"sha": "abc"}},
        "repository": {"full_name": "acme/widgets"},
        "sender": {"login": "alice"},
    }
    payload.update(overrides)
    return payload


def test_every_fixture_has_an_expectation():
    names = {p.name.removesuffix(".body.json") for p in FIXTURES.glob("*.body.json")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_normalises_to_its_internal_event(name):
    event, reviewer, reason = EXPECTED[name]
    headers, payload = read(name)

    delivery = normalise(headers, payload)

    assert delivery.event == event
    assert delivery.reviewer == reviewer
    assert delivery.reason == reason
    assert delivery.repo_full_name == "acme/widgets"
    assert (delivery.owner, delivery.repo_name) == ("acme", "widgets")
    if name.startswith("push"):
        assert delivery.pr_key is None
        assert delivery.ignored_message == "Event type push not handled"
    else:
        assert delivery.pr_key == "acme/widgets#7"
        assert delivery.pr_number == 7
        assert delivery.ignored_message is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_coarse_headers_alone_give_the_same_event(name):
    headers, payload = read(name)

    coarse = normalise(without_fine_headers(headers), payload)

    assert coarse.event == EXPECTED[name][0]


def test_event_type_keeps_the_fine_name_as_sent():
    headers, _ = read("review_rejected")

    assert event_type(headers) == "pull_request_review_rejected"
    assert event_type(without_fine_headers(headers)) == "pull_request_rejected"
    assert event_type(Headers()) == "unknown"


def test_forgejo_event_type_wins_over_gitea():
    _, payload = read("review_rejected")
    headers = Headers(
        {
            "X-Forgejo-Event-Type": "pull_request_review_approved",
            "X-Gitea-Event-Type": "pull_request_review_rejected",
        }
    )

    assert normalise(headers, payload).event == "review_approved"


def test_github_coarse_header_is_enough():
    _, payload = read("review_rejected")

    delivery = normalise(Headers({"X-GitHub-Event": "pull_request_rejected"}), payload)

    assert delivery.event == "review_rejected"


def test_forgejo_delivery_reads_like_the_gitea_one():
    gitea = normalise(*read("review_rejected"))
    forgejo = normalise(*read("forgejo_review_rejected"))

    assert forgejo == gitea


def test_merge_fields_come_from_the_merged_pr():
    delivery = normalise(*read("pr_merged"))

    assert delivery.merged_by == "orket-bot"
    assert delivery.merge_commit_sha == "f723ec55083765c1a7285b1cbc6d009e3ca864dd"
    assert delivery.head_sha == SECOND_HEAD
    assert delivery.clone_url == "https://git.example.test/acme/widgets.git"


def test_closed_without_merge_has_no_merger():
    delivery = normalise(*read("pr_closed"))

    assert delivery.merged_by is None
    assert delivery.merge_commit_sha is None


def test_sync_carries_the_new_head():
    assert normalise(*read("pr_synchronized")).head_sha == SECOND_HEAD
    assert normalise(*read("pr_opened")).head_sha == FIRST_HEAD


def test_pr_comment_reads_body_title_and_number_from_the_issue():
    delivery = normalise(*read("pr_comment"))

    assert delivery.comment_body.startswith("Switched to csv.writer")
    assert delivery.title == "Add CSV export for widget inventory"
    assert delivery.action == "created"


def test_fixture_titles_carry_no_card_reference():
    assert normalise(*read("pr_opened")).card_ref is None


@pytest.mark.parametrize(
    "state, event",
    [
        ("approved", "review_approved"),
        ("changes_requested", "review_rejected"),
        ("commented", "review_comment"),
        ("CHANGES_REQUESTED", "review_rejected"),
        ("dismissed", None),
    ],
)
def test_github_style_review_uses_review_state_and_user(state, event):
    payload = pr_payload(
        action="submitted",
        review={"state": state, "body": "Please add tests", "user": {"login": "carol"}},
        sender={"login": "dave"},
    )
    headers = Headers({"X-GitHub-Event": "pull_request_review"})

    delivery = normalise(headers, validate_delivery(headers, payload))

    assert delivery.event == event
    assert delivery.reviewer == "carol"
    if event:
        assert delivery.reason == "Please add tests"


def test_github_style_review_without_user_falls_back_to_sender():
    payload = pr_payload(review={"state": "approved"}, sender={"username": "dave"})

    delivery = normalise(Headers({"X-GitHub-Event": "pull_request_review"}), payload)

    assert delivery.reviewer == "dave"
    assert delivery.reason == NO_REASON


def test_form_encoded_delivery_is_read_like_json():
    headers, body = load_delivery("review_rejected")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    form = b"payload=" + quote_plus(body.decode("utf-8")).encode("ascii")

    signed = signed_bytes(form, headers["Content-Type"])
    delivery = normalise(headers, validate_delivery(headers, parse_payload(signed)))

    assert signed == body
    assert verify_signature(("fixture-secret",), signed, given_signature(headers))
    assert body_sha256(signed) == hashlib.sha256(body).hexdigest()
    assert (delivery.event, delivery.pr_key) == ("review_rejected", "acme/widgets#7")


def test_null_sub_objects_never_break_normalisation():
    payload = {
        "action": "closed",
        "number": 7,
        "pull_request": {
            "merged": True,
            "merged_by": None,
            "head": None,
            "title": None,
        },
        "repository": {"owner": {"username": "acme"}, "name": "widgets"},
        "sender": None,
        "review": None,
        "issue": None,
        "comment": None,
    }
    headers = Headers({"X-Gitea-Event-Type": "pull_request"})

    delivery = normalise(headers, validate_delivery(headers, payload))

    assert delivery.event == "pr_merged"
    assert delivery.pr_key == "acme/widgets#7"
    assert delivery.merged_by is None
    assert delivery.head_sha is None
    assert delivery.sender is None
    assert delivery.reviewer is None
    assert delivery.card_ref is None


def test_review_event_with_null_review_has_the_default_reason():
    headers = Headers({"X-Gitea-Event-Type": "pull_request_review_rejected"})

    delivery = normalise(headers, pr_payload(action="reviewed", review=None))

    assert delivery.event == "review_rejected"
    assert delivery.reason == NO_REASON


@pytest.mark.parametrize(
    "review, reason",
    [
        ({"content": "  Needs tests \n"}, "Needs tests"),
        ({"content": "", "body": "From body"}, "From body"),
        ({"content": "   ", "body": ""}, NO_REASON),
        ({}, NO_REASON),
    ],
)
def test_reason_prefers_content_then_body(review, reason):
    headers = Headers({"X-Gitea-Event-Type": "pull_request_review_rejected"})

    assert normalise(headers, pr_payload(review=review)).reason == reason


@pytest.mark.parametrize(
    "fine_type, action, event",
    [
        ("pull_request", "assigned", None),
        ("pull_request", "synchronized", None),
        ("pull_request_label", "label_updated", None),
        ("pull_request_review_request", "review_requested", None),
        ("pull_request_comment", "edited", None),
        ("pull_request_comment", "created", "pr_comment"),
        ("issue_comment", "created", None),
        ("issues", "opened", None),
        ("pull_request_sync", "synchronized", "pr_synchronized"),
    ],
)
def test_only_the_wh6_table_maps_to_internal_events(fine_type, action, event):
    headers = Headers({"X-Gitea-Event-Type": fine_type})

    delivery = normalise(headers, pr_payload(action=action))

    assert delivery.event == event
    if event is None:
        assert delivery.ignored_message == f"Event type {fine_type} not handled"


def test_coarse_pull_request_comment_without_review_is_not_handled():
    headers = Headers({"X-Gitea-Event": "pull_request_comment"})

    delivery = normalise(headers, pr_payload(action="created"))

    assert delivery.event is None
    assert delivery.ignored_message == "Event type pull_request_comment not handled"


def test_coarse_issue_comment_on_a_plain_issue_is_not_handled():
    headers = Headers({"X-Gitea-Event": "issue_comment"})

    assert normalise(headers, pr_payload(action="created", is_pull=False)).event is None


@pytest.mark.parametrize(
    "pull_title, issue_title, reference",
    [
        ("ISSUE-42 Add export", None, "ISSUE-42"),
        ("Fix [ISSUE-a_b.c@d-9] quoting", None, "ISSUE-a_b.c@d-9"),
        ("No reference", "ISSUE-7 from the issue", "ISSUE-7"),
        (None, "ISSUE-7 from the issue", "ISSUE-7"),
        ("ISSUE-1 and ISSUE-2", None, "ISSUE-1"),
        ("issue-42 lower case", None, None),
        ("ISSUE- nothing after", None, None),
    ],
)
def test_card_reference_is_the_first_issue_id_in_the_title(
    pull_title, issue_title, reference
):
    payload = pr_payload(issue={"number": 7, "title": issue_title})
    payload["pull_request"]["title"] = pull_title
    headers = Headers({"X-Gitea-Event-Type": "pull_request"})

    assert normalise(headers, payload).card_ref == reference


def test_card_id_candidates_try_whole_id_then_suffix():
    assert card_id_candidates("ISSUE-42") == ("ISSUE-42", "42")


@pytest.mark.parametrize(
    "names, expected",
    [
        (
            {
                "X-Forgejo-Delivery": "f",
                "X-Gitea-Delivery": "g",
                "X-Gogs-Delivery": "o",
                "X-GitHub-Delivery": "h",
            },
            "f",
        ),
        ({"X-Gitea-Delivery": "g", "X-Gogs-Delivery": "o"}, "g"),
        ({"X-Gogs-Delivery": "o", "X-GitHub-Delivery": "h"}, "o"),
        ({"X-GitHub-Delivery": "h"}, "h"),
        ({"X-Gitea-Delivery": "  ", "X-GitHub-Delivery": "h"}, "h"),
        ({"X-Gitea-Delivery": "x" * 101, "X-GitHub-Delivery": "h"}, "h"),
    ],
)
def test_delivery_id_takes_the_first_header(names, expected):
    assert delivery_id(Headers(names), b"{}") == expected


def test_delivery_id_without_header_is_the_body_hash():
    body = b'{"action":"opened"}'

    assert delivery_id(Headers(), body) == "sha256:" + hashlib.sha256(body).hexdigest()


def test_fixture_delivery_id_is_the_gitea_uuid():
    headers, body = load_delivery("review_rejected")

    assert delivery_id(headers, body) == "4fc615ee-27e7-443d-98dc-a00dd3fa33df"


def test_forgejo_fixture_delivery_id_is_the_forgejo_uuid():
    headers, body = load_delivery("forgejo_review_rejected")

    assert delivery_id(headers, body) == "d53beb3a-0d8c-422e-a751-4c9562d6ff51"


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"\xff\xfe\x00", b"[" * 100_000, b"{'single': 'quotes'}"]
)
def test_malformed_json_is_refused(raw):
    with pytest.raises(MalformedPayload, match="malformed JSON"):
        parse_payload(raw)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_fixture_passes_validation_unchanged(name):
    headers, body = load_delivery(name)
    payload = parse_payload(body)

    assert validate_delivery(headers, payload) == json.loads(body)


def test_unknown_keys_are_kept():
    payload = pr_payload(requested_reviewer=None, extra={"nested": [1, 2]})
    headers = Headers({"X-Gitea-Event-Type": "pull_request"})

    assert validate_delivery(headers, payload)["extra"] == {"nested": [1, 2]}


def errors_of(payload, event="pull_request"):
    headers = Headers({"X-Gitea-Event-Type": event})
    with pytest.raises(InvalidDelivery) as caught:
        validate_delivery(headers, payload)
    return caught.value.errors


@pytest.mark.parametrize("value", [[1, 2], "text", None, 7])
def test_payload_must_be_a_json_object(value):
    [error] = errors_of(value)

    assert error["loc"] == ["body"]
    assert error["type"] == "model_type"
    assert set(error) == {"loc", "msg", "type"}


@pytest.mark.parametrize(
    "field, value, error_type",
    [
        ("number", 0, "greater_than"),
        ("number", -3, "greater_than"),
        ("number", "7", "int_type"),
        ("number", True, "int_type"),
        ("number", 7.0, "int_type"),
        ("action", 5, "string_type"),
        ("is_pull", "yes", "bool_type"),
        ("review", [], "dict_type"),
        ("pull_request", "7", "dict_type"),
        ("repository", 12, "dict_type"),
        ("sender", "alice", "dict_type"),
        ("issue", [], "dict_type"),
        ("comment", "hi", "dict_type"),
    ],
)
def test_typed_fields_are_checked(field, value, error_type):
    errors = errors_of(pr_payload(**{field: value}))

    assert {"loc": ["body", field], "type": error_type} in [
        {"loc": e["loc"], "type": e["type"]} for e in errors
    ]


def test_pull_request_event_without_repository_is_refused():
    payload = pr_payload(repository={"owner": {"login": "acme"}})

    [error] = errors_of(payload)

    assert error["loc"] == ["body", "repository"]
    assert error["type"] == "missing"


def test_review_event_without_pr_number_is_refused():
    payload = pr_payload(number=None, pull_request={"title": "x"})

    [error] = errors_of(payload, event="pull_request_review_rejected")

    assert error["loc"] == ["body", "number"]
    assert error["type"] == "missing"


@pytest.mark.parametrize(
    "numbers",
    [
        {"number": None, "pull_request": {"number": 7}},
        {"number": None, "pull_request": None, "issue": {"number": 7}},
    ],
)
def test_pr_number_may_come_from_pull_request_or_issue(numbers):
    headers = Headers({"X-Gitea-Event-Type": "pull_request_comment"})

    payload = validate_delivery(headers, pr_payload(action="created", **numbers))

    assert normalise(headers, payload).pr_key == "acme/widgets#7"


def test_repository_owner_may_be_a_plain_login():
    payload = pr_payload(repository={"owner": "acme", "name": "widgets"})
    headers = Headers({"X-Gitea-Event-Type": "pull_request"})

    assert normalise(headers, validate_delivery(headers, payload)).pr_key == (
        "acme/widgets#7"
    )


def test_non_pull_request_events_need_no_repository():
    headers = Headers({"X-Gitea-Event-Type": "push"})

    assert validate_delivery(headers, {"ref": "refs/heads/main"}) == {
        "ref": "refs/heads/main"
    }
