"""Carrying out the Gitea rows of the outbox, with WH-9's reading of each answer.

Status codes decide, never Gitea's message text: a 405 from the merge endpoint can
mean "already merged", "conflict check still running" or "branch protection says
no", so the answer is checked against `GET …/pulls/{n}/merge` instead of parsed.

A retried row first looks for traces of an earlier attempt whose outcome is unknown
(a timeout after Gitea may have acted, or a worker killed mid-call): the marker of
its comment, the exact title of its issue, the merged state of its PR. So a retry
never posts, opens or merges twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.gitea import GiteaClient, GiteaError, GiteaResponse
from app.models.webhook import GiteaOutbox
from app.webhook.messages import comment_marker
from app.webhook.outbox import MergeProblem, Outcome, PullRef, body_of

MERGED = 204


def classify(response: GiteaResponse) -> Outcome:
    """The plain mapping: 2xx done; 429 and 5xx retried; anything else final."""
    if response.ok:
        return Outcome.done(response.status)
    message = response.message or f"HTTP {response.status}"
    if response.status == 429 or response.status >= 500:
        return Outcome("retry", response.status, message)
    return Outcome("failed", response.status, message)


class GiteaCalls:
    """Executes `comment`, `close_pr`, `create_requirements_issue` and `merge` rows."""

    def __init__(self, client: GiteaClient) -> None:
        self.client = client
        self._handlers: dict[
            str, Callable[[GiteaOutbox, PullRef, dict[str, Any], bool], Outcome]
        ] = {
            "comment": self._comment,
            "close_pr": self._close_pr,
            "create_requirements_issue": self._requirements_issue,
            "merge": self._merge,
        }

    def execute(self, row: GiteaOutbox) -> Outcome:
        handler = self._handlers.get(row.kind)
        if handler is None:
            return Outcome("failed", detail=f"not a Gitea outbox kind: {row.kind}")
        try:
            pr = PullRef.from_path(row.path)
        except ValueError as exc:
            return Outcome("failed", detail=str(exc))

        # An earlier claim of this row may have reached Gitea without us learning
        # the outcome; only then is it worth looking for its traces.
        retried = row.attempts > 1
        try:
            return handler(row, pr, body_of(row), retried)
        except GiteaError as exc:
            return Outcome("retry", None, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            # A row whose body or path cannot make a valid call never will.
            return Outcome("failed", None, f"malformed outbox row: {exc}")

    def _comment(
        self, row: GiteaOutbox, pr: PullRef, body: dict[str, Any], retried: bool
    ) -> Outcome:
        number = _number(pr)
        if retried:
            marker = comment_marker(row.dedupe_key)
            existing = self.client.list_comments(pr.owner, pr.repo, number)
            if not existing.ok:
                return classify(existing)
            if any(marker in str(item.get("body") or "") for item in existing.json):
                return Outcome.done(existing.status, "comment was already posted")
        text = body["body"]
        return classify(self.client.create_comment(pr.owner, pr.repo, number, text))

    def _close_pr(
        self, row: GiteaOutbox, pr: PullRef, body: dict[str, Any], retried: bool
    ) -> Outcome:
        # Closing is idempotent on Gitea's side: closing a closed PR changes nothing.
        return classify(self.client.close_pr(pr.owner, pr.repo, _number(pr)))

    def _merge(
        self, row: GiteaOutbox, pr: PullRef, body: dict[str, Any], retried: bool
    ) -> Outcome:
        number = _number(pr)
        if retried and self._is_merged(pr, number):
            return Outcome.done(MERGED, "PR was already merged")

        answer = self.client.merge_pr(pr.owner, pr.repo, number, body)
        if answer.ok:
            return Outcome.done(answer.status)
        message = answer.message
        if answer.status == 405:
            if self._is_merged(pr, number):
                return Outcome.done(405, "PR was already merged")
            # Not mergeable yet (conflict check running, protection, approvals):
            # retried like a 5xx, explained in a comment when attempts run out.
            problem = MergeProblem(405, message)
            return Outcome("retry", 405, message or "not mergeable", problem)
        if answer.status == 409:
            return Outcome("failed", 409, message, MergeProblem(409, message))
        if answer.status == 404:
            problem = MergeProblem(404, message, close_cycle=True)
            return Outcome("failed", 404, message, problem)
        return classify(answer)

    def _is_merged(self, pr: PullRef, number: int) -> bool:
        return self.client.merge_status(pr.owner, pr.repo, number).status == MERGED

    def _requirements_issue(
        self, row: GiteaOutbox, pr: PullRef, body: dict[str, Any], retried: bool
    ) -> Outcome:
        title = body["title"]
        if retried:
            found = self.client.search_open_issues(pr.owner, pr.repo, title)
            if not found.ok:
                return classify(found)
            if found.json:
                number = found.json[0]["number"]
                return Outcome.done(found.status, f"issue #{number} already open")

        label_ids = self._label_ids(pr, body.get("labels") or [])
        if isinstance(label_ids, Outcome):
            return label_ids
        created = self.client.create_issue(
            pr.owner, pr.repo, title, body["body"], label_ids
        )
        return classify(created)

    def _label_ids(
        self, pr: PullRef, wanted: list[dict[str, str]]
    ) -> list[int] | Outcome:
        """Ids of the wanted labels by exact name (lowest id wins: names are not
        unique in Gitea), creating the missing ones."""
        listing = self.client.list_labels(pr.owner, pr.repo)
        if not listing.ok:
            return classify(listing)

        ids = []
        for label in wanted:
            matches = [
                item["id"] for item in listing.json if item["name"] == label["name"]
            ]
            if matches:
                ids.append(min(matches))
                continue
            created = self.client.create_label(
                pr.owner,
                pr.repo,
                label["name"],
                label["color"],
                label.get("description", ""),
            )
            if not created.ok:
                return classify(created)
            ids.append(created.json["id"])
        return ids


def _number(pr: PullRef) -> int:
    if pr.number is None:
        raise ValueError("the path names no PR number")
    return pr.number
