"""The messages a seat sees for one turn (ENG-7).

Only `system`, `user` and `assistant` roles are used. The system message says who
the seat is and how to work; the first user message holds the whole task (card, epic,
dependencies, comments and, on review, the latest verification); earlier turns of the
card in this run follow, replies as `assistant` and tool results as `user`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.engine.assets import Dialect, Epic, Organization, Role
from app.engine.context import TurnRecord
from app.engine.idesign import CATEGORIES as IDESIGN_CATEGORIES
from app.engine.state_machine import (
    REVIEWER_ROLE,
    STATUSES,
    TRANSITIONS,
    WAIT_REASONS,
)
from app.engine.tools import TOOL_SCHEMAS
from app.models.base import isoformat

RESULT_CHARS = 4000
VERIFICATION_LOG_LINES = 20
REVIEW_INSTRUCTION = (
    "You are reviewing this card. Check the work and the verification above. If it "
    "is complete and verified, set the status to `done`. Otherwise send it back by "
    "setting the status to `in_progress` with a comment that says what to fix."
)


def system_prompt(
    *,
    organization: Organization,
    team_name: str,
    seat_key: str,
    roles: Sequence[Role],
    idesign: bool,
    tools: Iterable[str],
    dialect: Dialect,
    memories: Sequence[Mapping[str, Any]] = (),
) -> str:
    sections = [
        _section("IDENTITY", _identity(organization, team_name, seat_key, roles)),
        _section("INTENT", "\n".join(r.intent for r in roles if r.intent) or "-"),
        _section(
            "RESPONSIBILITIES",
            _bullets(item for r in roles for item in r.responsibilities),
        ),
        _section(
            "CONSTRAINTS", _bullets(item for r in roles for item in r.constraints)
        ),
    ]
    if idesign:
        sections.append(_section("iDESIGN CONSTRAINTS", _idesign_rules()))
    sections += [
        _section("CARD SYSTEM PROTOCOL", _protocol()),
        _section("TOOLS", _tool_lines(tools)),
        _section(
            f"SYNTAX DIALECT ({dialect.model_family})",
            dialect.dsl_format.strip() or "-",
        ),
    ]
    if dialect.constraints:
        sections.append(_section("DIALECT CONSTRAINTS", _bullets(dialect.constraints)))
    sections += [
        _section("GUARDRAIL", dialect.hallucination_guard.strip() or _default_guard()),
        _section(
            "PROJECT CONTEXT (PAST DECISIONS)",
            _bullets(str(m.get("content", "")) for m in memories),
        ),
    ]
    return "\n\n".join(sections)


def task_prompt(
    *,
    card: Any,
    epic: Epic,
    dependencies: Sequence[tuple[str, str | None]],
    comments: Sequence[Any],
    review: bool,
    verification: Mapping[str, Any] | None,
) -> str:
    """The first user message: everything the seat needs to do the card."""
    parts = [
        _section(
            "CARD",
            "\n".join(
                [
                    f"ID: {card.id}",
                    f"Summary: {card.summary}",
                    f"Type: {card.type}",
                    f"Priority: {card.priority}",
                    f"Status: {card.status}",
                    f"Seat: {card.seat}",
                ]
            ),
        ),
        _section(
            "EPIC",
            f"Name: {epic.name}\nDescription: {epic.description or '-'}",
        ),
    ]
    for title, value in (
        ("DESCRIPTION", card.description),
        ("NOTE", card.note),
        ("REQUIREMENTS", card.requirements or epic.requirements),
        ("EXAMPLE TASK", epic.example_task),
    ):
        if value:
            parts.append(_section(title, value))
    parts.append(
        _section(
            "DEPENDENCIES",
            _bullets(f"{dep}: {status or 'missing'}" for dep, status in dependencies),
        )
    )
    parts.append(_section("COMMENTS", _bullets(_comment_line(c) for c in comments)))
    if review:
        parts.append(_section("LATEST VERIFICATION", _verification_text(verification)))
        parts.append(_section("REVIEW", REVIEW_INSTRUCTION))
    return "\n\n".join(parts)


def build_messages(
    system: str, task: str, turns: Sequence[TurnRecord]
) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": task},
    ]
    for turn in turns:
        messages.append({"role": "assistant", "content": turn.reply})
        messages.append({"role": "user", "content": tool_results_message(turn.results)})
    return messages


def tool_results_message(results: Sequence[Mapping[str, Any]]) -> str:
    """`TOOL RESULTS:` and the results as JSON, each entry cut to 4,000 characters."""
    entries = [_cut_entry(entry) for entry in results]
    return "TOOL RESULTS: " + json.dumps(entries, ensure_ascii=False)


def _cut_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    text = json.dumps(entry, ensure_ascii=False)
    if len(text) <= RESULT_CHARS:
        return dict(entry)
    key = "result" if "result" in entry else "error"
    value = json.dumps(entry.get(key), ensure_ascii=False)
    return {**entry, key: value[:RESULT_CHARS] + "… [truncated]"}


def _section(title: str, body: str) -> str:
    return f"{title}\n{body}"


def _bullets(items: Iterable[str]) -> str:
    lines = [f"- {item}" for item in items if item]
    return "\n".join(lines) if lines else "- none"


def _identity(
    organization: Organization, team_name: str, seat_key: str, roles: Sequence[Role]
) -> str:
    names = ", ".join(role.name for role in roles)
    lines = [
        f"You are seat '{seat_key}' of team '{team_name}' at {organization.name}, "
        f"acting as: {names}."
    ]
    lines += [f"{role.display_name}: {role.description}" for role in roles]
    if organization.vision:
        lines.append(f"Organization vision: {organization.vision}")
    return "\n".join(lines)


def _idesign_rules() -> str:
    categories = ", ".join(sorted(IDESIGN_CATEGORIES))
    return _bullets(
        [
            "Code files (.py .ts .tsx .js .jsx .mjs) never go at the workspace root.",
            f"The first folder of a code file is one of: {categories}.",
            "Files in managers/, engines/ and accessors/ carry that word in their "
            "name, and their classes carry it in the class name.",
            "Managers may use engines and accessors; engines may use accessors; "
            "accessors use neither.",
        ]
    )


def _protocol() -> str:
    moves = "; ".join(
        f"{source} -> {', '.join(sorted(targets))}"
        for source, targets in TRANSITIONS.items()
        if targets
    )
    return _bullets(
        [
            f"Card statuses: {', '.join(STATUSES)}.",
            f"Allowed status changes: {moves}.",
            "Change a status with update_issue_status; blocked and "
            "waiting_for_developer need a wait_reason, one of: "
            f"{', '.join(WAIT_REASONS)}.",
            f"Only {REVIEWER_ROLE} may set done, and a card with a verification "
            "fixture must pass it first.",
            'Call tools with JSON objects: {"tool": "<name>", "args": {...}}; '
            "several calls may go in one JSON array.",
            "Results come back in the next message. A reply without tool calls ends "
            "your turn on this card.",
            "When the work is complete, move the card to code_review.",
        ]
    )


def _tool_lines(tools: Iterable[str]) -> str:
    return "\n".join(
        f"- {tool}: {json.dumps(TOOL_SCHEMAS.get(tool, {'type': 'object'}))}"
        for tool in tools
    )


def _default_guard() -> str:
    return (
        "Only use the tools listed above and only claim what the tool results show. "
        "Never invent file contents, results or card ids."
    )


def _comment_line(comment: Any) -> str:
    return f"{comment.author} ({isoformat(comment.created_at)}): {comment.content}"


def _verification_text(result: Mapping[str, Any] | None) -> str:
    if not result:
        return "No verification has run for this card."
    lines = [
        f"Passed {result.get('passed', 0)} of {result.get('total_scenarios', 0)}, "
        f"failed {result.get('failed', 0)}, fatal: "
        f"{'yes' if result.get('fatal') else 'no'}"
    ]
    logs = result.get("logs") or []
    lines += [str(line) for line in logs[-VERIFICATION_LOG_LINES:]]
    return "\n".join(lines)
