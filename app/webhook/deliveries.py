"""What a delivery says: validation, identity and normalisation (SPEC WH-4..WH-6).

Everything here is pure: it reads header mappings and parsed JSON and returns plain
values, so the blueprint, the dry-run endpoint and the tests share one reading of a
delivery. Header mappings should look names up case-insensitively, as Flask's
request headers do.

Gitea names one event twice: a coarse `X-Gitea-Event` and, since 1.16, a
fine-grained `X-Gitea-Event-Type`. The fine name is preferred; the coarse one is only
translated when no fine header exists (old Gitea, or a GitHub-style sender).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DELIVERY_ID_HEADERS = (
    "X-Forgejo-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-GitHub-Delivery",
)
EVENT_TYPE_HEADERS = ("X-Forgejo-Event-Type", "X-Gitea-Event-Type", "X-Gogs-Event-Type")
COARSE_EVENT_HEADERS = (
    "X-Forgejo-Event",
    "X-Gitea-Event",
    "X-Gogs-Event",
    "X-GitHub-Event",
)

# `webhook_events.delivery_id` is 100 characters; a longer header is not a real id.
MAX_DELIVERY_ID_LENGTH = 100
UNKNOWN_EVENT_TYPE = "unknown"
NO_REASON = "No reason provided"
CARD_REFERENCE = re.compile(r"ISSUE-[A-Za-z0-9_.@-]+")

REVIEW_EVENTS = frozenset({"review_approved", "review_rejected", "review_comment"})

_PULL_REQUEST_ACTIONS = {
    "opened": "pr_opened",
    "reopened": "pr_reopened",
    "edited": "pr_edited",
}
# Fine-grained types whose meaning does not depend on the action.
_FIXED_EVENTS = {
    "pull_request_sync": "pr_synchronized",
    "pull_request_review_approved": "review_approved",
    "pull_request_review_rejected": "review_rejected",
    "pull_request_review_comment": "review_comment",
}
_GITHUB_REVIEW_STATES = {
    "approved": "review_approved",
    "changes_requested": "review_rejected",
    "commented": "review_comment",
}
_COARSE_REVIEW_EVENTS = {
    "pull_request_approved": "pull_request_review_approved",
    "pull_request_rejected": "pull_request_review_rejected",
}


# PR numbers are 32-bit integer columns.
MAX_PR_NUMBER = 2**31 - 1


class MalformedPayload(ValueError):
    """The signed bytes are not JSON."""


class InvalidDelivery(ValueError):
    """The payload breaks WH-4; `errors` is ready for a 422 `detail`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"invalid delivery: {len(errors)} problem(s)")
        self.errors = errors


class DeliveryPayload(BaseModel):
    """The fields the policy reads, typed; every other key passes through untouched.

    Strict types: a sender that writes `"number": "7"` or `"is_pull": "yes"` is
    broken, and guessing what it meant would be worse than saying so.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    action: str | None = None
    number: int | None = Field(default=None, gt=0, le=MAX_PR_NUMBER)
    pull_request: dict[str, Any] | None = None
    repository: dict[str, Any] | None = None
    review: dict[str, Any] | None = None
    sender: dict[str, Any] | None = None
    issue: dict[str, Any] | None = None
    comment: dict[str, Any] | None = None
    is_pull: bool | None = None


@dataclass(frozen=True)
class NormalisedDelivery:
    """One delivery reduced to what the review-cycle policy needs (WH-6)."""

    event_type: str
    event: str | None
    action: str | None
    repo_full_name: str | None
    owner: str | None
    repo_name: str | None
    pr_number: int | None
    pr_key: str | None
    sender: str | None
    reviewer: str | None
    reason: str | None
    head_sha: str | None
    merged_by: str | None
    merge_commit_sha: str | None
    clone_url: str | None
    title: str | None
    card_ref: str | None
    comment_body: str | None

    @property
    def ignored_message(self) -> str | None:
        """The `ignored` answer for an event the policy does not handle."""
        if self.event is not None:
            return None
        return f"Event type {self.event_type} not handled"


def parse_payload(signed: bytes) -> Any:
    """The JSON value of the signed bytes (WH-1 step 4)."""
    try:
        value = json.loads(signed)
        # Lone surrogates (`"\ud800"`) decode but cannot be stored.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and lone surrogates (UnicodeError);
        # RecursionError absurd nesting.
        raise MalformedPayload("Invalid payload: malformed JSON") from None
    return value


def validate_delivery(headers: Mapping[str, str], data: Any) -> dict[str, Any]:
    """Check `data` against WH-4 and return it unchanged, or raise InvalidDelivery."""
    try:
        DeliveryPayload.model_validate(data)
    except ValidationError as exc:
        raise InvalidDelivery([_api_error(error) for error in exc.errors()]) from None

    errors = []
    if _is_pull_request_event(headers, data):
        if _repository_names(data.get("repository")) is None:
            errors.append(
                _missing(
                    ["repository"],
                    "Field required: repository full_name, or owner login and name",
                )
            )
        if _pr_number(data) is None:
            errors.append(
                _missing(
                    ["number"],
                    "Field required: number, pull_request.number or issue.number",
                )
            )
    if errors:
        raise InvalidDelivery(errors)
    return data


def body_sha256(signed: bytes) -> str:
    """Hex SHA-256 of the signed bytes; replays keep it while their ids change."""
    return hashlib.sha256(signed).hexdigest()


def delivery_id(headers: Mapping[str, str], signed: bytes) -> str:
    """The sender's delivery id, else `sha256:<body hash>` (WH-5)."""
    for name in DELIVERY_ID_HEADERS:
        value = (headers.get(name) or "").strip()
        if value and len(value) <= MAX_DELIVERY_ID_LENGTH:
            return value
    return f"sha256:{body_sha256(signed)}"


def event_type(headers: Mapping[str, str]) -> str:
    """The type as the sender named it: the fine header, else the coarse one."""
    return (
        _first_header(headers, EVENT_TYPE_HEADERS)
        or _first_header(headers, COARSE_EVENT_HEADERS)
        or UNKNOWN_EVENT_TYPE
    )


def fine_event_type(
    headers: Mapping[str, str], payload: Mapping[str, Any]
) -> str | None:
    """The fine-grained type, translating a coarse name when that is all there is.

    None when a coarse name has no fine-grained equivalent for this payload.
    """
    fine = _first_header(headers, EVENT_TYPE_HEADERS)
    if fine:
        return fine
    coarse = _first_header(headers, COARSE_EVENT_HEADERS)
    return _from_coarse(coarse, payload) if coarse else None


def internal_event(fine_type: str | None, payload: Mapping[str, Any]) -> str | None:
    """The WH-6 internal event for a fine-grained type and payload, or None."""
    action = payload.get("action")
    if fine_type == "pull_request":
        if action == "closed":
            merged = _obj(payload.get("pull_request")).get("merged") is True
            return "pr_merged" if merged else "pr_closed"
        return _PULL_REQUEST_ACTIONS.get(action) if isinstance(action, str) else None
    if fine_type == "pull_request_comment":
        return "pr_comment" if action == "created" else None
    if fine_type == "pull_request_review":
        state = _text(_obj(payload.get("review")).get("state")) or ""
        return _GITHUB_REVIEW_STATES.get(state.lower())
    return _FIXED_EVENTS.get(fine_type or "")


def normalise(
    headers: Mapping[str, str], payload: Mapping[str, Any]
) -> NormalisedDelivery:
    """Read a validated payload into a NormalisedDelivery; never fails on nulls."""
    event = internal_event(fine_event_type(headers, payload), payload)
    names = _repository_names(payload.get("repository"))
    full_name, owner, repo_name = names or (None, None, None)
    number = _pr_number(payload)
    pull = _obj(payload.get("pull_request"))
    review = _obj(payload.get("review"))
    sender = _login(payload.get("sender"))
    title = _text(pull.get("title")) or _text(_obj(payload.get("issue")).get("title"))

    return NormalisedDelivery(
        event_type=event_type(headers),
        event=event,
        action=_text(payload.get("action")),
        repo_full_name=full_name,
        owner=owner,
        repo_name=repo_name,
        pr_number=number,
        pr_key=f"{full_name}#{number}" if full_name and number else None,
        sender=sender,
        reviewer=_login(review.get("user")) or sender,
        reason=_review_reason(review) if event in REVIEW_EVENTS else None,
        head_sha=_text(_obj(pull.get("head")).get("sha")),
        merged_by=_login(pull.get("merged_by")),
        merge_commit_sha=_text(pull.get("merge_commit_sha")),
        clone_url=_text(_obj(payload.get("repository")).get("clone_url")),
        title=title,
        card_ref=_card_reference(payload),
        comment_body=_text(_obj(payload.get("comment")).get("body")),
    )


def card_id_candidates(card_ref: str) -> tuple[str, ...]:
    """Card ids to try for a reference: the whole match, then the part after ISSUE-."""
    short = card_ref.removeprefix("ISSUE-")
    return (card_ref, short) if short and short != card_ref else (card_ref,)


def _from_coarse(coarse: str, payload: Mapping[str, Any]) -> str | None:
    if coarse == "pull_request":
        synced = payload.get("action") == "synchronized"
        return "pull_request_sync" if synced else "pull_request"
    if coarse in _COARSE_REVIEW_EVENTS:
        return _COARSE_REVIEW_EVENTS[coarse]
    if coarse == "pull_request_comment":
        # Coarse name of a comment *review*; without a review object it means nothing.
        has_review = payload.get("review") is not None
        return "pull_request_review_comment" if has_review else None
    if coarse == "issue_comment":
        on_pull = payload.get("is_pull") is True
        return "pull_request_comment" if on_pull else "issue_comment"
    return coarse


def _is_pull_request_event(
    headers: Mapping[str, str], payload: Mapping[str, Any]
) -> bool:
    name = fine_event_type(headers, payload) or event_type(headers)
    return name.startswith("pull_request")


def _repository_names(repository: Any) -> tuple[str, str, str] | None:
    """(full name, owner, name) of a repository object, or None if it has none."""
    repo = _obj(repository)
    full_name = _text(repo.get("full_name"))
    if full_name:
        owner, _, name = full_name.partition("/")
        if owner and name:
            return full_name, owner, name

    # Inside `issue.repository` Gitea renders the owner as a bare login string.
    owner_login = _text(repo.get("owner")) or _login(repo.get("owner"))
    repo_name = _text(repo.get("name"))
    if owner_login and repo_name:
        return f"{owner_login}/{repo_name}", owner_login, repo_name
    return None


def _pr_number(payload: Mapping[str, Any]) -> int | None:
    candidates = (
        payload.get("number"),
        _obj(payload.get("pull_request")).get("number"),
        _obj(payload.get("issue")).get("number"),
    )
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 < value <= MAX_PR_NUMBER:
                return value
    return None


def _review_reason(review: Mapping[str, Any]) -> str:
    return _text(review.get("content")) or _text(review.get("body")) or NO_REASON


def _card_reference(payload: Mapping[str, Any]) -> str | None:
    titles = (
        _obj(payload.get("pull_request")).get("title"),
        _obj(payload.get("issue")).get("title"),
    )
    for title in titles:
        match = CARD_REFERENCE.search(title) if isinstance(title, str) else None
        if match:
            return match.group(0)
    return None


def _first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = (headers.get(name) or "").strip()
        if value:
            return value
    return None


def _login(user: Any) -> str | None:
    """A user's identity: `login`, else its copy `username`."""
    account = _obj(user)
    return _text(account.get("login")) or _text(account.get("username"))


def _obj(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (nulls are normal)."""
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _api_error(error: Any) -> dict[str, Any]:
    """A pydantic error in the API-3 shape; the offending input is never echoed."""
    return {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}


def _missing(path: list[str], message: str) -> dict[str, Any]:
    return {"loc": ["body", *path], "msg": message, "type": "missing"}
