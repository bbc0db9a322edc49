"""Text of the comments and issues Orket posts on Gitea (SPEC WH-8).

Every body ends with a hidden marker, `<!-- orket:<dedupe_key> -->`. When a call's
outcome is unknown (a timeout after Gitea may have acted), the outbox looks for the
marker among the PR's comments instead of posting a second copy.

Text that comes from people or from Gitea (review reasons, error messages) is kept
on its own lines and can never close or forge a marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Protocol

NO_REASON = "No reason provided"


class RecordedRejection(Protocol):
    """One counted change request, as the `review_failures` table stores it."""

    cycle_number: int
    reviewer: str | None
    reason: str | None
    created_at: datetime | str


def comment_marker(dedupe_key: str) -> str:
    """The hidden marker that identifies a body posted for `dedupe_key`."""
    if "-->" in dedupe_key or "\n" in dedupe_key:
        raise ValueError("a dedupe key cannot end an HTML comment or span lines")
    return f"<!-- orket:{dedupe_key} -->"


def escalation_comment(
    pr_number: int, escalate_at: int, reject_at: int, dedupe_key: str
) -> str:
    """Posted when the E-th change request arrives: asks the architect to step in."""
    return _with_marker(
        dedupe_key,
        "## Review cycle escalated to the architect",
        f"Changes have now been requested on PR #{pr_number} {_times(escalate_at)}. "
        "Another revision alone is unlikely to settle it, so @lead_architect, "
        "please look at the PR before the author tries again:",
        "1. Is this PR solving the right problem?\n"
        "2. Is the architecture of the change sound?\n"
        "3. Is there a simpler way to reach the same goal?\n"
        "4. What concrete guidance should the author follow in the next revision?",
        f"Change request {reject_at} of {reject_at} closes this PR automatically "
        "and opens a requirements review issue.",
    )


def final_rejection_comment(pr_number: int, reject_at: int, dedupe_key: str) -> str:
    """Posted when the PR is closed after the R-th change request."""
    return _with_marker(
        dedupe_key,
        f"## PR closed after {reject_at} rejected review cycles",
        f"Changes were requested on PR #{pr_number} in {reject_at} review cycles, "
        "the limit for automated review, so it has been closed automatically.",
        "A requirements review issue has been opened "
        f'("{requirements_issue_title(pr_number, reject_at)}") to find out what '
        "went wrong before the work is picked up again.",
    )


def requirements_issue_title(pr_number: int, reject_at: int) -> str:
    """Exact title; the outbox also searches open issues for it to avoid duplicates."""
    return f"Requirements Review: PR #{pr_number} failed after {reject_at} cycles"


def requirements_issue_body(
    pr_number: int,
    reject_at: int,
    rejections: Sequence[RecordedRejection],
    dedupe_key: str,
    pr_title: str | None = None,
) -> str:
    """The requirements issue: every reason, a root-cause checklist, next steps."""
    subject = f"PR #{pr_number} (closed)"
    if pr_title:
        subject += f', "{_one_line(pr_title)}",'
    reasons = [_reason_line(item) for item in sorted(rejections, key=_cycle)]
    return _with_marker(
        dedupe_key,
        f"## Requirements review for PR #{pr_number}",
        f"{subject} was rejected in {reject_at} review cycles and closed "
        "automatically. Read the reasons together: when reviewers keep finding "
        "problems, the cause usually lies before the code.",
        "### Reasons given by reviewers",
        "\n".join(reasons) if reasons else "- No reasons were recorded.",
        "### Root cause (tick what applies)",
        "- [ ] Unclear requirements: the task did not say what done looks like\n"
        "- [ ] Technical limitation: the requested approach cannot work here\n"
        "- [ ] Model capability: the task is beyond what the assigned model does "
        "reliably\n"
        "- [ ] Missing context: the author lacked code, data or decisions it needed",
        "### Next steps",
        "1. Refine the requirements and the acceptance criteria.\n"
        "2. Add examples: inputs, expected outputs and edge cases.\n"
        "3. Simplify the scope, or split the work into smaller issues.\n"
        "4. Reassign the work to another seat, model or person.",
    )


def merge_failure_comment(
    pr_number: int, status: int, gitea_message: str, dedupe_key: str
) -> str:
    """Posted when an approved PR could not be merged; quotes Gitea's own words."""
    return _with_marker(
        dedupe_key,
        "## Automatic merge failed",
        f"PR #{pr_number} was approved, but Gitea refused to merge it (HTTP {status}):",
        _quote(gitea_message) if gitea_message.strip() else "> (Gitea gave no message)",
        _merge_hint(status),
    )


def sandbox_comment(
    pr_number: int,
    sandbox_id: str,
    tech_stack: str,
    api_url: str | None,
    frontend_url: str | None,
    dedupe_key: str,
    phase_end: datetime | str | None = None,
) -> str:
    """Posted once the merged PR runs in its sandbox."""
    until = f" (until {_timestamp(phase_end)})" if phase_end else ""
    return _with_marker(
        dedupe_key,
        "## Sandbox deployed",
        f"The merged PR #{pr_number} is running in a sandbox for hands-on testing.",
        f"- API: {api_url or 'not part of this stack'}\n"
        f"- Frontend: {frontend_url or 'not part of this stack'}\n"
        f"- Stack: `{tech_stack}`\n"
        f"- Sandbox id: `{sandbox_id}`",
        f"It stays up for the bug-fix phase{until} and is removed when the phase "
        "ends. Report bugs found there as issues that mention this PR.",
    )


def _with_marker(dedupe_key: str, *paragraphs: str) -> str:
    return "\n\n".join([*paragraphs, comment_marker(dedupe_key)])


def _reason_line(rejection: RecordedRejection) -> str:
    reviewer = _one_line(rejection.reviewer or "") or "unknown"
    reason = _one_line(rejection.reason or "") or NO_REASON
    when = _timestamp(rejection.created_at)
    return f"- **Cycle {rejection.cycle_number}** ({when}) @{reviewer}: {reason}"


def _cycle(rejection: RecordedRejection) -> int:
    return rejection.cycle_number


def _merge_hint(status: int) -> str:
    if status == 409:
        return (
            "The branch changed after the approval, or it conflicts with the base "
            "branch. Review the latest revision and approve it again to retry."
        )
    if status == 405:
        return (
            "Gitea does not consider the PR mergeable: branch protection, required "
            "checks or approvals, or a conflict check that never finished. Fix that "
            "and approve again, or merge by hand."
        )
    return "The PR stays open. Merge it by hand, or approve again once fixed."


def _quote(text: str) -> str:
    return "\n".join(
        f"> {_defuse(line)}".rstrip() for line in text.strip().splitlines()
    )


def _one_line(text: str) -> str:
    """Outside text folded onto one line, so it cannot break the list it sits in."""
    return _defuse(" ".join(text.split()))


def _defuse(text: str) -> str:
    """Keep outside text from opening an HTML comment that hides or fakes a marker."""
    return text.replace("<!--", "&lt;!--")


def _timestamp(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # stored timestamps are UTC
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"
