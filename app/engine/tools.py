"""The agent's tools and the gate in front of them (ENG-9).

`run_tool_call` is the one entry point: it checks the tool is visible to the seat,
applies the gate, runs the tool and emits `tool_call` or `tool_blocked`. Tools return
`{"ok": true, ...}` or `{"ok": false, "error": ...}` and never raise. A gate violation
(`GateViolation`) skips the call, is returned to the model as an error and counts
toward the card's violation limit; any other problem is a plain failed result.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine import idesign
from app.engine.assets import TOOL_CATALOGUE, normalize_priority
from app.engine.cards import depends_on as card_depends_on
from app.engine.cards import (
    has_fixture,
    latest_verification,
    new_card,
    new_child_id,
    verification_of,
)
from app.engine.context import AttemptContext
from app.engine.parser import ToolCall
from app.engine.sprint import sprint_for
from app.engine.state_machine import (
    REVIEWER_ROLE,
    check_agent_transition,
    normalize_status,
)
from app.engine.workspace import (
    OutsideWorkspace,
    atomic_write,
    first_component,
    resolve_inside,
)
from app.models.base import isoformat, utcnow

log = logging.getLogger(__name__)

ALWAYS_VISIBLE = ("get_issue_context", "add_issue_comment", "update_issue_status")
READ_LIMIT = 256 * 1024
WRITE_LIMIT = 1024 * 1024
MAX_CHILDREN_PER_RUN = 20
MAX_COMMENT_CHARS = 10_000
MIN_SUMMARY_CHARS = 5

# Argument schemas shown to the model in the TOOLS section of the prompt.
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "read_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
    "write_file": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "content": {"type": ["string", "object", "array"]},
        },
        "required": ["path", "content"],
    },
    "list_directory": {
        "type": "object",
        "properties": {"path": {"type": "string", "default": "."}},
    },
    "create_issue": {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "minLength": 5},
            "seat": {"type": "string"},
            "type": {"type": "string", "default": "issue"},
            "priority": {"type": ["string", "number"], "default": "medium"},
            "note": {"type": "string"},
            "description": {"type": "string"},
            "depends_on": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["summary", "seat"],
    },
    "add_issue_comment": {
        "type": "object",
        "properties": {
            "comment": {"type": "string", "minLength": 1, "maxLength": 10000},
            "issue_id": {"type": "string"},
        },
        "required": ["comment"],
    },
    "get_issue_context": {
        "type": "object",
        "properties": {"issue_id": {"type": "string"}},
    },
    "update_issue_status": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "issue_id": {"type": "string"},
            "wait_reason": {"type": "string"},
            "comment": {"type": "string"},
        },
        "required": ["status"],
    },
    "nominate_card": {"type": "object"},
    "refinement_proposal": {"type": "object"},
}


class GateViolation(Exception):
    """A call the gate refuses; the message goes back to the model."""


class ToolFailure(Exception):
    """A plain failed result; the message goes back to the model."""


@dataclass(frozen=True)
class CallOutcome:
    tool: str
    result: dict[str, Any]
    violation: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    def for_model(self) -> dict[str, Any]:
        """The `{"tool","ok","result"|"error"}` entry of TOOL RESULTS."""
        if self.ok:
            body = {k: v for k, v in self.result.items() if k != "ok"}
            return {"tool": self.tool, "ok": True, "result": body}
        return {"tool": self.tool, "ok": False, "error": self.result.get("error")}


def visible_tools(role_tools: list[tuple[str, ...] | None]) -> tuple[str, ...]:
    """Catalogue tools the roles list (all when a role lists none), plus the three
    card tools every seat has, in catalogue order."""
    if not role_tools or any(tools is None for tools in role_tools):
        listed = set(TOOL_CATALOGUE)
    else:
        listed = {tool for tools in role_tools if tools for tool in tools}
    listed.update(ALWAYS_VISIBLE)
    return tuple(tool for tool in TOOL_CATALOGUE if tool in listed)


def run_tool_call(ctx: AttemptContext, call: ToolCall) -> CallOutcome:
    """Gate, run and report one call."""
    tool, args = call.tool, call.args
    handler = _HANDLERS.get(tool)
    if handler is None:
        outcome = CallOutcome(tool, _failed(f"Unknown tool '{tool}'"))
    elif tool not in ctx.visible_tools:
        message = f"Tool '{tool}' is not available to role '{ctx.role}'"
        outcome = CallOutcome(tool, _failed(message))
    else:
        outcome = _guarded(ctx, tool, args, handler)

    if outcome.violation:
        count = ctx.run.add_violation(ctx.card_id)
        _emit(
            ctx,
            "tool_blocked",
            {
                "tool": tool,
                "args": args,
                "reason": outcome.result["error"],
                "violations": count,
            },
            level="warning",
        )
    else:
        _emit(ctx, "tool_call", _call_event(tool, args, outcome.result))
    return outcome


def _guarded(
    ctx: AttemptContext,
    tool: str,
    args: dict[str, Any],
    handler: Callable[[AttemptContext, dict[str, Any]], dict[str, Any]],
) -> CallOutcome:
    try:
        return CallOutcome(tool, handler(ctx, args))
    except GateViolation as exc:
        return CallOutcome(tool, _failed(str(exc)), violation=True)
    except ToolFailure as exc:
        return CallOutcome(tool, _failed(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a tool must never raise (ENG-9)
        log.exception("tool %s failed run_id=%s", tool, ctx.run.run_id)
        ctx.run.events.emit_error(
            f"tool {tool}", exc, run_id=ctx.run.run_id, card_id=ctx.card_id
        )
        return CallOutcome(tool, _failed(f"internal error in {tool}"))


def _call_event(tool: str, args: dict[str, Any], result: dict[str, Any]) -> dict:
    summary: dict[str, Any] = {"ok": bool(result.get("ok"))}
    if not summary["ok"]:
        summary["error"] = result.get("error")
    data: dict[str, Any] = {"tool": tool, "args": args, "result": summary}
    content = args.get("content")
    if tool == "write_file" and summary["ok"]:
        data["lines"] = len(_text_content(content).splitlines())
    return data


def _emit(
    ctx: AttemptContext, event: str, data: dict[str, Any], level: str = "info"
) -> None:
    ctx.run.events.emit(
        event,
        data,
        role=ctx.role,
        level=level,
        run_id=ctx.run.run_id,
        card_id=ctx.card_id,
    )


def _failed(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _text_arg(args: dict[str, Any], name: str, tool: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolFailure(f"{tool} requires '{name}' argument")
    return value


def _text_content(content: Any) -> str:
    if isinstance(content, dict | list):
        return json.dumps(content, indent=2, ensure_ascii=False)
    if content is None:
        return ""
    return content if isinstance(content, str) else str(content)


# Files ------------------------------------------------------------------------


def _read_file(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    relative = _text_arg(args, "path", "read_file")
    path = _readable_path(ctx, relative)
    if not path.exists():
        raise ToolFailure("File not found")
    if path.is_dir():
        raise ToolFailure("Is a directory")
    with path.open("rb") as stream:
        raw = stream.read(READ_LIMIT + 1)
    truncated = len(raw) > READ_LIMIT
    content = _decode_text(raw[:READ_LIMIT], final=not truncated)
    return {"ok": True, "content": content, "truncated": truncated}


def _decode_text(raw: bytes, *, final: bool) -> str:
    if b"\x00" in raw:
        raise ToolFailure("Not a text file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(raw, final=final)
    except UnicodeDecodeError:
        raise ToolFailure("Not a text file") from None


def _readable_path(ctx: AttemptContext, relative: str) -> Path:
    """The workspace file, else the file under one of the epic's references."""
    try:
        inside: Path | None = resolve_inside(ctx.scope.workspace, relative)
    except OutsideWorkspace:
        inside = None
    if inside is not None and inside.exists():
        return inside
    reference = _reference_path(ctx, relative)
    if reference is not None:
        return reference
    if inside is None:
        raise ToolFailure(f"Access denied: {relative} is outside the workspace")
    return inside


def _reference_path(ctx: AttemptContext, relative: str) -> Path | None:
    """`relative` read from the config dir, when it lies in a referenced path."""
    try:
        candidate = resolve_inside(ctx.scope.config_root, relative)
    except OutsideWorkspace:
        return None
    for reference in ctx.scope.references:
        if candidate == reference or candidate.is_relative_to(reference):
            return candidate
    return None


def _write_file(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    relative = args.get("path")
    if not isinstance(relative, str) or not relative.strip():
        raise GateViolation("write_file requires 'path' argument")
    if first_component(relative) == "verification":
        raise GateViolation("Security violation: verification fixtures are read-only")
    try:
        target = resolve_inside(ctx.scope.workspace, relative)
    except OutsideWorkspace:
        raise GateViolation(
            f"Security violation: Cannot write outside workspace ({relative})"
        ) from None
    content = _text_content(args.get("content"))
    shown = target.relative_to(ctx.scope.workspace.resolve()).as_posix()
    if ctx.scope.idesign:
        report = idesign.check_write(shown, content)
        if report.violations:
            raise GateViolation("; ".join(report.violations))
    if target.is_dir():
        raise ToolFailure("Is a directory")
    data = content.encode("utf-8")
    if len(data) > WRITE_LIMIT:
        raise ToolFailure("Content too large")
    atomic_write(target, data)
    return {"ok": True, "path": shown}


def _list_directory(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    relative = args.get("path") or "."
    if not isinstance(relative, str):
        raise ToolFailure("list_directory requires 'path' to be a string")
    try:
        folder = resolve_inside(ctx.scope.workspace, relative)
    except OutsideWorkspace:
        raise ToolFailure(
            f"Access denied: {relative} is outside the workspace"
        ) from None
    if not folder.is_dir():
        raise ToolFailure("Dir not found")
    items = [
        {"name": entry.name, "is_dir": entry.is_dir()}
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
    ]
    return {"ok": True, "items": items}


# Cards ------------------------------------------------------------------------


def _build_card(ctx: AttemptContext, card_id: str) -> Any:
    card = ctx.run.cards.get(card_id)
    if card is None or card.build_id != ctx.scope.build_id:
        raise ToolFailure(f"Card {card_id} not found")
    return card


def _target_id(ctx: AttemptContext, args: dict[str, Any]) -> str:
    value = args.get("issue_id")
    if value is None or value == "":
        return ctx.card_id
    if not isinstance(value, str):
        raise ToolFailure("'issue_id' must be a string")
    return value.strip()


def _create_issue(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    summary = args.get("summary")
    if not isinstance(summary, str) or len(summary.strip()) < MIN_SUMMARY_CHARS:
        raise ToolFailure(
            f"create_issue requires 'summary' of at least {MIN_SUMMARY_CHARS} "
            "characters"
        )
    seat_name = args.get("seat")
    seat = ctx.scope.team.find_seat(seat_name) if isinstance(seat_name, str) else None
    if seat is None:
        raise ToolFailure(
            f"create_issue requires 'seat', a seat of the team: {seat_name}"
        )
    priority, _ = normalize_priority(args.get("priority", "medium"))
    dependencies = args.get("depends_on") or []
    if not isinstance(dependencies, list) or not all(
        isinstance(item, str) for item in dependencies
    ):
        raise ToolFailure("'depends_on' must be a list of card ids")

    run = ctx.run
    with run.lock:
        if len(run.children) >= MAX_CHILDREN_PER_RUN:
            raise ToolFailure(
                f"At most {MAX_CHILDREN_PER_RUN} issues can be created per run"
            )
        card_id = _unused_child_id(ctx)
        run.children.add(card_id)
    now = utcnow()
    card = new_card(
        card_id=card_id,
        build_id=ctx.scope.build_id,
        epic_id=ctx.scope.epic.stem,
        session_id=run.run_id,
        parent_id=ctx.card_id,
        seat=seat.key,
        summary=summary.strip(),
        sprint=sprint_for(now),
        created_at=now,
        type=_optional_text(args, "type") or "issue",
        priority=priority,
        note=_optional_text(args, "note"),
        description=_optional_text(args, "description"),
        depends_on=list(dependencies),
    )
    run.cards.insert([card], run_id=run.run_id, role=ctx.role)
    return {"ok": True, "issue_id": card_id}


def _unused_child_id(ctx: AttemptContext) -> str:
    while True:
        card_id = new_child_id()
        if card_id not in ctx.run.children and ctx.run.cards.get(card_id) is None:
            return card_id


def _optional_text(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ToolFailure(f"'{name}' must be a string")
    return value


def _is_child(ctx: AttemptContext, card: Any) -> bool:
    return card.parent_id == ctx.card_id or card.id in ctx.run.children


def _add_issue_comment(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    comment = args.get("comment")
    if not isinstance(comment, str) or not 1 <= len(comment) <= MAX_COMMENT_CHARS:
        raise ToolFailure(
            "add_issue_comment requires 'comment' of 1 to "
            f"{MAX_COMMENT_CHARS} characters"
        )
    card = _build_card(ctx, _target_id(ctx, args))
    if card.id != ctx.card_id and not _is_child(ctx, card):
        raise ToolFailure(f"Cannot comment on {card.id}: not this card or its child")
    comment_id = ctx.run.cards.add_comment(
        card.id, ctx.seat_key, comment, run_id=ctx.run.run_id, role=ctx.role
    )
    return {"ok": True, "comment_id": comment_id}


def _get_issue_context(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    card = _build_card(ctx, _target_id(ctx, args))
    comments = [
        {
            "author": comment.author,
            "content": comment.content,
            "created_at": isoformat(comment.created_at),
        }
        for comment in ctx.run.cards.comments(card.id)
    ]
    return {
        "ok": True,
        "id": card.id,
        "summary": card.summary,
        "status": card.status,
        "wait_reason": card.wait_reason,
        "note": card.note,
        "description": card.description,
        "requirements": card.requirements,
        "depends_on": card_depends_on(card),
        "comments": comments,
        "verification": verification_of(card),
    }


def _update_issue_status(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    status = args.get("status")
    if not isinstance(status, str) or not status.strip():
        raise GateViolation("Invalid status: " + json.dumps(status))
    target = normalize_status(status)
    card_id = _target_id(ctx, args)
    raw_reason = args.get("wait_reason")
    wait_reason = raw_reason.strip().lower() if isinstance(raw_reason, str) else None
    roles = ctx.role_names
    refused = f"Security violation: cannot change status of {card_id}"

    def check(row: Any) -> str | None:
        # Permission first, on the row read inside the status write's transaction.
        if row.build_id != ctx.scope.build_id or not _may_move(ctx, row):
            return refused
        return check_agent_transition(
            row.status,
            target,
            wait_reason,
            roles,
            has_fixture(row),
            latest_verification(row),
        )

    change = ctx.run.cards.set_status(
        card_id,
        target,
        check=check,
        by=ctx.seat_key,
        role=ctx.seat_key,
        event_role=ctx.role,
        wait_reason=wait_reason,
        run_id=ctx.run.run_id,
    )
    if change.from_status is None:
        raise GateViolation(refused)
    if not change.ok:
        raise GateViolation(change.error or "status change refused")
    comment = args.get("comment")
    if isinstance(comment, str) and comment.strip():
        ctx.run.cards.add_comment(
            card_id,
            ctx.seat_key,
            comment[:MAX_COMMENT_CHARS],
            run_id=ctx.run.run_id,
            role=ctx.role,
        )
    return {"ok": True, "issue_id": card_id, "status": target}


def _may_move(ctx: AttemptContext, card: Any) -> bool:
    """Own card, any build card for the reviewer, or a child made in this run."""
    if card.id == ctx.card_id or card.id in ctx.run.children:
        return True
    return REVIEWER_ROLE in ctx.role_names


def _nominate_card(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    _emit(ctx, "card_nomination", {**args, "nominated_by": ctx.seat_key})
    return {"ok": True, "message": "Nomination recorded"}


def _refinement_proposal(ctx: AttemptContext, args: dict[str, Any]) -> dict[str, Any]:
    _emit(ctx, "refinement_proposed", {**args, "nominated_by": ctx.seat_key})
    return {"ok": True, "message": "Refinement proposal recorded"}


_HANDLERS: dict[str, Callable[[AttemptContext, dict[str, Any]], dict[str, Any]]] = {
    "read_file": _read_file,
    "write_file": _write_file,
    "list_directory": _list_directory,
    "create_issue": _create_issue,
    "add_issue_comment": _add_issue_comment,
    "get_issue_context": _get_issue_context,
    "update_issue_status": _update_issue_status,
    "nominate_card": _nominate_card,
    "refinement_proposal": _refinement_proposal,
}
