"""The PR comment announcing a deployed sandbox, owed to Gitea through the outbox.

The API process writes the row straight into the webhook database's `gitea_outbox`
(WH-8, WH-9); the webhook process's outbox worker posts it. The dedupe key
`sandbox:<id>` makes the comment at most once per sandbox and ends the body's marker.
"""

from __future__ import annotations

import logging

from app.db import Database
from app.models.base import load_json
from app.models.runtime import Sandbox
from app.models.webhook import BugFixPhase
from app.sandbox.registry import sandbox_urls
from app.webhook.messages import sandbox_comment
from app.webhook.outbox import queue_comment

log = logging.getLogger(__name__)


def comment_dedupe_key(sandbox_id: str) -> str:
    return f"sandbox:{sandbox_id}"


def queue_sandbox_comment(webhook_db: Database, row: Sandbox) -> bool:
    """Queue the comment on the PR; False without a PR or when it is already owed."""
    owner, _, repo = (row.repo_full_name or "").partition("/")
    if not owner or not repo or not row.pr_number:
        return False
    dedupe_key = comment_dedupe_key(row.id)
    urls = sandbox_urls(row)
    text = sandbox_comment(
        row.pr_number,
        row.id,
        row.tech_stack,
        urls["api_url"],
        urls["frontend_url"],
        dedupe_key,
        _phase_end(webhook_db, row.rock_id),
    )
    queued = queue_comment(
        webhook_db,
        owner=owner,
        repo=repo,
        number=row.pr_number,
        text=text,
        dedupe_key=dedupe_key,
    )
    if queued:
        log.info(
            "sandbox comment owed to %s#%s (%s)",
            row.repo_full_name,
            row.pr_number,
            row.id,
        )
    return queued


def _phase_end(webhook_db: Database, rock_id: str | None) -> str | None:
    """When the PR's bug-fix phase ends, which is how long the sandbox lives."""
    if not rock_id:
        return None
    with webhook_db.reader() as session:
        phase = session.get(BugFixPhase, rock_id)
        data = load_json(phase.data_json, {}) if phase is not None else {}
    end = data.get("scheduled_end")
    return end if isinstance(end, str) and end else None
