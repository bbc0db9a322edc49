"""The tool-call parser: one test per row of the reply table, then the limits."""

from __future__ import annotations

import json

import pytest

from app.engine.parser import MAX_CALLS_PER_REPLY, ToolCall, parse_tool_calls

READ_A_TXT = '{"tool":"read_file","args":{"path":"a.txt"}}'


def tools(text: str) -> list[str]:
    return [call.tool for call in parse_tool_calls(text).calls]


@pytest.mark.parametrize(
    "reply",
    [
        READ_A_TXT,
        f"I will read it now. {READ_A_TXT} Then I will decide.",
        f"Here:\n```json\n{READ_A_TXT}\n```\n",
    ],
    ids=["bare", "inside prose", "fenced"],
)
def test_tool_key_call_bare_in_prose_or_fenced(reply):
    result = parse_tool_calls(reply)

    assert result.calls == [ToolCall("read_file", {"path": "a.txt"})]
    assert result.errors == []


def test_array_of_calls_keeps_order_and_missing_args_are_empty():
    result = parse_tool_calls('[{"tool":"a","args":{}},{"tool":"b"}]')

    assert result.calls == [ToolCall("a", {}), ToolCall("b", {})]


def test_openai_name_and_string_arguments():
    reply = (
        '{"name":"write_file",'
        '"arguments":"{\\"path\\":\\"o.py\\",\\"content\\":\\"x\\"}"}'
    )

    result = parse_tool_calls(reply)

    assert result.calls == [ToolCall("write_file", {"path": "o.py", "content": "x"})]


def test_function_object_with_type_ignored():
    reply = (
        '{"type":"function","function":{"name":"read_file","arguments":{"path":"a"}}}'
    )

    assert parse_tool_calls(reply).calls == [ToolCall("read_file", {"path": "a"})]


def test_tool_calls_array_of_function_objects():
    reply = (
        '{"tool_calls":[{"id":"c1","type":"function","function":'
        '{"name":"list_directory","arguments":"{}"}}]}'
    )

    assert parse_tool_calls(reply).calls == [ToolCall("list_directory", {})]


def test_tool_call_tags_are_just_text():
    reply = '<tool_call>{"name":"read_file","arguments":{"path":"a"}}</tool_call>'

    assert parse_tool_calls(reply).calls == [ToolCall("read_file", {"path": "a"})]


def test_brace_inside_a_string_does_not_end_the_call():
    reply = '{"tool":"write_file","args":{"path":"a.py","content":"print(\'}\')"}}'

    result = parse_tool_calls(reply)

    assert result.calls == [
        ToolCall("write_file", {"path": "a.py", "content": "print('}')"})
    ]


def test_call_shaped_content_is_written_not_executed():
    reply = (
        '{"tool":"write_file","args":{"path":"a.json",'
        '"content":"{\\"tool\\": \\"evil\\"}"}}'
    )

    result = parse_tool_calls(reply)

    assert tools(reply) == ["write_file"]
    assert json.loads(result.calls[0].args["content"]) == {"tool": "evil"}


def test_broken_json_is_skipped_and_the_next_call_is_found():
    reply = 'Bad: {"tool":"x","args":{"p":1,}} Good: {"tool":"y","args":{"p":1}}'

    result = parse_tool_calls(reply)

    assert result.calls == [ToolCall("y", {"p": 1})]
    assert result.errors == []


def test_null_args_mean_no_arguments():
    assert parse_tool_calls('{"tool":"read_file","args":null}').calls == [
        ToolCall("read_file", {})
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "{'tool': 'read_file'}",
        '{"name":"list_directory"}',
        '{"thought":"I should look around first","tool_calls":[]}',
        "TOOL: write_file\nPATH: a.py\nCONTENT: print(1)",
    ],
    ids=["single quotes", "name without arguments", "empty tool_calls", "line syntax"],
)
def test_replies_without_a_call(reply):
    result = parse_tool_calls(reply)

    assert result.calls == []
    assert result.errors == []


@pytest.mark.parametrize(
    "reply",
    [
        '{"name":"read_file","arguments":"not json"}',
        '{"tool":"read_file","args":"p"}',
        '{"tool":"read_file","args":[1, 2]}',
        '{"function":{"name":"read_file","arguments":"[]"}}',
    ],
)
def test_arguments_that_are_not_an_object_are_malformed_calls(reply):
    result = parse_tool_calls(reply)

    assert result.calls == []
    assert result.errors == [
        "Malformed call to 'read_file': arguments must be a JSON object"
    ]


def test_malformed_call_does_not_hide_the_good_ones():
    reply = '[{"tool":"a","args":"bad"},{"tool":"b","args":{"x":1}}]'

    result = parse_tool_calls(reply)

    assert result.calls == [ToolCall("b", {"x": 1})]
    assert len(result.errors) == 1


@pytest.mark.parametrize("key", ["args", "arguments", "parameters"])
def test_tool_arguments_may_use_any_of_the_three_keys(key):
    reply = json.dumps({"tool": "read_file", key: {"path": "p"}})

    assert parse_tool_calls(reply).calls == [ToolCall("read_file", {"path": "p"})]


def test_args_key_takes_precedence_over_arguments():
    reply = json.dumps({"tool": "t", "arguments": {"n": 2}, "args": {"n": 1}})

    assert parse_tool_calls(reply).calls == [ToolCall("t", {"n": 1})]


def test_insides_of_objects_that_are_not_calls_are_not_searched():
    reply = json.dumps({"plan": {"tool": "hidden", "args": {}}, "steps": [1, 2]})

    assert parse_tool_calls(reply).calls == []


def test_provider_native_calls_appended_after_prose_are_found():
    native = {"tool_calls": [{"function": {"name": "read_file", "arguments": "{}"}}]}
    reply = f"Let me check.\n{json.dumps(native)}"

    assert tools(reply) == ["read_file"]


def test_at_most_twenty_calls_are_kept_and_the_rest_reported():
    reply = "\n".join(json.dumps({"tool": f"t{n}"}) for n in range(25))

    result = parse_tool_calls(reply)

    assert len(result.calls) == MAX_CALLS_PER_REPLY == 20
    assert result.calls[-1].tool == "t19"
    assert result.errors == ["At most 20 tool calls run per reply; 5 more were ignored"]


def test_exactly_twenty_calls_is_not_an_error():
    reply = json.dumps([{"tool": f"t{n}"} for n in range(20)])

    result = parse_tool_calls(reply)

    assert len(result.calls) == 20
    assert result.errors == []


def test_pathological_nesting_is_harmless():
    result = parse_tool_calls("[" * 2000 + '{"tool":"ok"}')

    assert result.calls == [ToolCall("ok", {})]
    assert result.errors == []
