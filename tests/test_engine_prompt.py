"""What the model is shown on each turn (ENG-7), and project memory (ENG-13)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.engine.memory import Memory, keywords
from app.engine.providers import ScriptedProvider
from tests.engine_support import (
    Harness,
    call,
    harness_factory_fixture,
    status,
)


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict, list[dict]]]:
    """Every (context, messages) the scripted provider is called with."""
    seen: list[tuple[dict, list[dict]]] = []
    original = ScriptedProvider.complete

    def recording(self: Any, messages: list[dict], options: Any) -> Any:
        seen.append((dict(options.context), [dict(m) for m in messages]))
        return original(self, messages, options)

    monkeypatch.setattr(ScriptedProvider, "complete", recording)
    return seen


def _epic(harness: Harness, replies: dict, **epic_fields: Any) -> None:
    harness.setup(
        [
            {"id": "A-1", "summary": "Base module", "seat": "builder"},
            {
                "id": "A-2",
                "summary": "Parser for invoices",
                "seat": "builder",
                "priority": "high",
                "note": "Keep it small.",
                "description": "Parse the invoice format.",
                "depends_on": ["A-1"],
            },
        ],
        replies,
        description="Invoice tooling.",
        requirements="Python 3.11, no dependencies.",
        example_task="parse('INV-1') returns a dict",
        **epic_fields,
    )


GUARD = {"integrity_guard": [status("done")]}
FLOW = {"coder": [status("code_review")], **GUARD}


def _first(prompts: list, card: str, review: bool = False) -> list[dict]:
    return next(
        messages
        for context, messages in prompts
        if context["issue_id"] == card and context["review"] is review
    )


def test_messages_use_only_system_user_and_assistant(harness, prompts) -> None:
    _epic(harness, {"coder": [call("list_directory"), status("code_review")], **GUARD})

    harness.run("t_epic")

    roles = {message["role"] for _, messages in prompts for message in messages}
    assert roles == {"system", "user", "assistant"}
    assert all(messages[0]["role"] == "system" for _, messages in prompts)


def test_system_prompt_sections(harness, prompts) -> None:
    _epic(harness, FLOW)

    harness.run("t_epic")

    system = _first(prompts, "A-1")[0]["content"]
    for section in (
        "IDENTITY",
        "INTENT",
        "RESPONSIBILITIES",
        "CONSTRAINTS",
        "CARD SYSTEM PROTOCOL",
        "TOOLS",
        "SYNTAX DIALECT (generic)",
        "GUARDRAIL",
        "PROJECT CONTEXT (PAST DECISIONS)",
    ):
        assert f"\n{section}\n" in f"\n{system}", section
    assert "iDESIGN CONSTRAINTS" not in system
    assert "Never mark a card done; review decides that." in system
    assert "Only well-formed JSON tool calls are run." in system
    assert '- write_file: {"type": "object"' in system
    assert "- create_issue:" not in system  # not among the coder's tools
    assert "image_generate" not in system


def test_idesign_constraints_appear_only_when_enabled(harness, prompts) -> None:
    issues = [{"id": "A-1", "seat": "builder"}]
    harness.setup(issues, FLOW, architecture_governance={"idesign": True})

    harness.run("t_epic")

    assert "iDESIGN CONSTRAINTS" in _first(prompts, "A-1")[0]["content"]


def test_first_user_message_holds_the_whole_task(harness, prompts) -> None:
    _epic(harness, FLOW)
    harness.run("t_epic")
    harness.cards.add_comment("A-2", "lead", "Mind the totals.", run_id=None)
    harness.set_columns("A-2", status="ready")
    prompts.clear()

    harness.run("A-2", type="issue")

    task = _first(prompts, "A-2")[1]
    assert task["role"] == "user"
    text = task["content"]
    for expected in (
        "ID: A-2",
        "Summary: Parser for invoices",
        "Type: issue",
        "Priority: 3.0",
        "Status: in_progress",
        "Seat: builder",
        "Name: Test epic",
        "Description: Invoice tooling.",
        "Parse the invoice format.",
        "Keep it small.",
        "Python 3.11, no dependencies.",
        "parse('INV-1') returns a dict",
        "- A-1: done",
    ):
        assert expected in text, expected
    assert "lead (" in text and "): Mind the totals." in text
    assert "LATEST VERIFICATION" not in text


def test_review_prompt_shows_the_verification_and_the_instruction(
    harness, prompts
) -> None:
    _epic(harness, FLOW)

    harness.run("t_epic")

    review = _first(prompts, "A-1", review=True)
    text = review[1]["content"]
    assert "LATEST VERIFICATION" in text
    assert "Passed 0 of 0" in text
    assert "No verification fixture defined. Skipping empirical tests." in text
    assert "set the status to `done`" in text
    assert "`in_progress` with a comment" in text


def test_earlier_turns_are_replayed_as_assistant_and_tool_results(
    harness_factory, prompts
) -> None:
    harness = harness_factory(context_window=2)
    listing = call("list_directory")
    _epic(
        harness, {"coder": [listing, listing, listing, status("code_review")], **GUARD}
    )

    harness.run("t_epic")

    fourth = [m for c, m in prompts if c["issue_id"] == "A-1" and not c["review"]][3]
    assert [m["role"] for m in fourth] == ["system", "user", "assistant", "user"] + [
        "assistant",
        "user",
    ]
    assert fourth[2]["content"] == json.dumps(listing, separators=(",", ":"))
    assert fourth[3]["content"].startswith("TOOL RESULTS: ")
    results = json.loads(fourth[3]["content"].removeprefix("TOOL RESULTS: "))
    assert results == [{"tool": "list_directory", "ok": True, "result": {"items": []}}]


def test_long_tool_results_are_cut(harness, prompts) -> None:
    _epic(
        harness,
        {
            "coder": [
                call("write_file", path="big.txt", content="x" * 9000),
                call("read_file", path="big.txt"),
                status("code_review"),
            ],
            **GUARD,
        },
    )

    harness.run("t_epic")

    third = [m for c, m in prompts if c["issue_id"] == "A-1" and not c["review"]][2]
    results = json.loads(third[-1]["content"].removeprefix("TOOL RESULTS: "))
    assert len(json.dumps(results[0]["result"])) < 4100


def test_past_decisions_are_offered_from_memory(harness, prompts) -> None:
    Memory(harness.db).remember("Decision by architect on X-9: invoices use Decimal")
    Memory(harness.db).remember("Unrelated note about logos")
    _epic(harness, FLOW)

    harness.run("t_epic")

    system = _first(prompts, "A-2")[0]["content"]
    context = system.split("PROJECT CONTEXT (PAST DECISIONS)\n", 1)[1]
    assert "invoices use Decimal" in context
    assert "logos" not in context


def test_replies_with_a_decision_are_remembered(harness) -> None:
    decision = "Decision: use a state machine.\n" + json.dumps(status("code_review"))
    _epic(harness, {"A-1/coder": [decision], **FLOW})

    run_id, _ = harness.run("t_epic")

    found = Memory(harness.db).search("state machine")
    assert found[0]["content"].startswith("Decision by builder on A-1: Decision: use")
    assert harness.events_of(run_id, "memory_stored")[0]["card_id"] == "A-1"


# Memory -------------------------------------------------------------------------------


def test_keywords_are_distinct_lower_case_tokens() -> None:
    assert keywords("Use the DB; the db_url is set! 2x") == [
        "use",
        "the",
        "db",
        "db_url",
        "is",
        "set",
        "2x",
    ]


def test_search_ranks_by_shared_tokens_then_newest(harness: Harness) -> None:
    memory = Memory(harness.db)
    one = memory.remember("alpha beta gamma", {"n": 1})
    two = memory.remember("alpha beta", {"n": 2})
    three = memory.remember("alpha", {"n": 3})
    memory.remember("delta only")

    found = memory.search("alpha beta gamma")

    assert [item["id"] for item in found] == [one, two, three]
    assert [item["score"] for item in found] == [3, 2, 1]
    assert found[0]["metadata"] == {"n": 1}
    assert set(found[0]) == {"content", "metadata", "score", "timestamp", "id"}


def test_underscore_tokens_do_not_match_as_wildcards(harness: Harness) -> None:
    memory = Memory(harness.db)
    memory.remember("dbxurl")

    assert memory.search("db_url") == []


def test_blank_query_gives_the_newest(harness: Harness) -> None:
    memory = Memory(harness.db)
    ids = [memory.remember(f"note {n}") for n in range(7)]

    found = memory.search("   ")

    assert [item["id"] for item in found] == ids[::-1][:5]


def test_only_the_newest_rows_are_kept(harness: Harness) -> None:
    memory = Memory(harness.db, max_rows=3)
    ids = [memory.remember(f"token{n} shared") for n in range(5)]

    found = memory.search("shared", limit=10)

    assert [item["id"] for item in found] == ids[::-1][:3]


def test_default_cap_is_five_thousand() -> None:
    from app.engine.memory import MAX_ROWS

    assert MAX_ROWS == 5000
