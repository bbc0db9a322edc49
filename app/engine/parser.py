"""Finding tool calls in a model reply.

A reply is prose with JSON somewhere inside it: bare, in a code fence, between
`<tool_call>` tags, or appended by a provider as `{"tool_calls": [...]}`. The scan
decodes one complete JSON value at each `{` or `[` with the standard decoder, so braces
inside strings never confuse it, then keeps whatever has the shape of a call. Values
that are not calls are skipped whole: their insides are never searched, which is why a
file whose content looks like a call is written, not executed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_CALLS_PER_REPLY = 20
_ARG_KEYS = ("args", "arguments", "parameters")
_decoder = json.JSONDecoder()
_OPENING = re.compile(r"[{\[]")


@dataclass(frozen=True)
class ToolCall:
    tool: str
    args: dict[str, Any]


@dataclass
class ParseResult:
    """Calls in reply order, and errors for call-shaped objects that cannot run."""

    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _MalformedCall(ValueError):
    pass


def parse_tool_calls(text: str) -> ParseResult:
    result = ParseResult()
    position = _next_opening(text, 0)
    while position >= 0:
        try:
            value, end = _decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError):
            # Not a complete value here (or absurdly deep nesting): move one on.
            position = _next_opening(text, position + 1)
            continue
        _collect(value, result)
        position = _next_opening(text, end)

    if len(result.calls) > MAX_CALLS_PER_REPLY:
        dropped = len(result.calls) - MAX_CALLS_PER_REPLY
        del result.calls[MAX_CALLS_PER_REPLY:]
        result.errors.append(
            f"At most {MAX_CALLS_PER_REPLY} tool calls run per reply; "
            f"{dropped} more were ignored"
        )
    return result


def _next_opening(text: str, position: int) -> int:
    match = _OPENING.search(text, position)
    return match.start() if match else -1


def _collect(value: Any, result: ParseResult) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            _collect_object(item, result)


def _collect_object(obj: dict[str, Any], result: ParseResult) -> None:
    """Apply the call shapes in order; an object matching none is not a call."""
    tool_calls = obj.get("tool_calls")
    try:
        if _is_name(obj.get("tool")):
            result.calls.append(ToolCall(obj["tool"], _tool_args(obj)))
        elif _is_name(obj.get("name")) and "arguments" in obj:
            name = obj["name"]
            result.calls.append(ToolCall(name, _decode_args(obj["arguments"], name)))
        elif isinstance(obj.get("function"), dict) and _is_name(
            obj["function"].get("name")
        ):
            function = obj["function"]
            args = _decode_args(function.get("arguments"), function["name"])
            result.calls.append(ToolCall(function["name"], args))
        elif isinstance(tool_calls, list):
            _collect(tool_calls, result)
    except _MalformedCall as exc:
        result.errors.append(str(exc))


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _tool_args(obj: dict[str, Any]) -> dict[str, Any]:
    for key in _ARG_KEYS:
        if key in obj:
            return _decode_args(obj[key], obj["tool"])
    return {}


def _decode_args(raw: Any, tool: str) -> dict[str, Any]:
    """Arguments as an object: JSON strings are decoded, null means none."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _MalformedCall(
            f"Malformed call to '{tool}': arguments must be a JSON object"
        )
    return value
