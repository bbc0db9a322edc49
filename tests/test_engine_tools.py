"""The agent's tools and their gate, called directly (ENG-9)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from app.engine.parser import ToolCall
from app.engine.tools import run_tool_call
from tests.engine_support import (
    Harness,
    attempt_context,
    harness_factory_fixture,
)


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


REMOVED_TOOLS = (
    "image_generate",
    "image_analyze",
    "archive_eval",
    "promote_prompt",
    "report_credits",
    "request_excuse",
)


@pytest.fixture
def two_cards(harness: Harness) -> Harness:
    harness.setup(
        [
            {"id": "A-1", "seat": "builder", "note": "first"},
            {"id": "A-2", "seat": "builder", "depends_on": ["A-1"]},
        ],
        {},
    )
    return harness


def use(ctx, tool: str, **args):
    return run_tool_call(ctx, ToolCall(tool, args))


def _events(harness: Harness, name: str) -> list[dict]:
    return harness.events_of("testrun", name)


# Files --------------------------------------------------------------------------------


def test_write_read_and_list_inside_the_workspace(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1")

    written = use(ctx, "write_file", path="agent_output/a.py", content="x = 1\ny = 2\n")
    read = use(ctx, "read_file", path="agent_output/a.py")
    listed = use(ctx, "list_directory", path="agent_output")
    root = use(ctx, "list_directory")

    assert written.result == {"ok": True, "path": "agent_output/a.py"}
    assert read.result == {"ok": True, "content": "x = 1\ny = 2\n", "truncated": False}
    assert listed.result == {"ok": True, "items": [{"name": "a.py", "is_dir": False}]}
    assert root.result["items"] == [{"name": "agent_output", "is_dir": True}]
    call_event = _events(two_cards, "tool_call")[0]
    assert call_event["data"]["lines"] == 2
    assert call_event["data"]["result"] == {"ok": True}
    assert call_event["role"] == "coder" and call_event["card_id"] == "A-1"


def test_object_content_is_written_as_indented_json(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1")

    use(ctx, "write_file", path="data/config.json", content={"a": [1, 2]})

    written = (ctx.scope.workspace / "data" / "config.json").read_text()
    assert written == json.dumps({"a": [1, 2]}, indent=2)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (None, "write_file requires 'path' argument"),
        (
            "../escape.txt",
            "Security violation: Cannot write outside workspace (../escape.txt)",
        ),
        (
            "/etc/orket.txt",
            "Security violation: Cannot write outside workspace (/etc/orket.txt)",
        ),
        (
            "verification/demo/calc_fixture.py",
            "Security violation: verification fixtures are read-only",
        ),
        (
            "Verification/x.py",
            "Security violation: verification fixtures are read-only",
        ),
    ],
)
def test_gate_refuses_bad_writes_as_violations(two_cards: Harness, path, message):
    ctx = attempt_context(two_cards, "A-1")
    args = {"content": "x"} if path is None else {"path": path, "content": "x"}

    outcome = run_tool_call(ctx, ToolCall("write_file", args))

    blocked = _events(two_cards, "tool_blocked")
    assert outcome.violation
    assert outcome.result == {"ok": False, "error": message}
    assert blocked[0]["data"]["reason"] == message
    assert blocked[0]["data"]["violations"] == 1
    assert _events(two_cards, "tool_call") == []
    assert not (two_cards.settings.builds_root / "escape.txt").exists()


def test_symlinks_are_resolved_before_the_workspace_check(
    two_cards: Harness, tmp_path
) -> None:
    ctx = attempt_context(two_cards, "A-1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, ctx.scope.workspace / "link")

    write = use(ctx, "write_file", path="link/planted.txt", content="x")
    read = use(ctx, "read_file", path="link/secret.txt")

    assert write.violation
    assert "Cannot write outside workspace" in write.result["error"]
    assert not (outside / "planted.txt").exists()
    assert read.result == {
        "ok": False,
        "error": "Access denied: link/secret.txt is outside the workspace",
    }
    assert not read.violation


def test_read_failures_are_plain_results(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1")
    (ctx.scope.workspace / "bin.dat").write_bytes(b"\x00\x01\x02")
    (ctx.scope.workspace / "folder").mkdir()

    missing = use(ctx, "read_file", path="nope.txt")
    binary = use(ctx, "read_file", path="bin.dat")
    folder = use(ctx, "read_file", path="folder")
    no_dir = use(ctx, "list_directory", path="nothing")

    assert missing.result["error"] == "File not found"
    assert binary.result["error"] == "Not a text file"
    assert folder.result["error"] == "Is a directory"
    assert no_dir.result["error"] == "Dir not found"
    assert not any(o.violation for o in (missing, binary, folder, no_dir))


def test_large_files_are_read_truncated(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1")
    (ctx.scope.workspace / "big.txt").write_text("a" * (300 * 1024))

    read = use(ctx, "read_file", path="big.txt")

    assert read.result["truncated"] is True
    assert len(read.result["content"]) == 256 * 1024


def test_reads_may_use_the_epics_references(harness: Harness) -> None:
    harness.setup([{"id": "A-1", "seat": "builder"}], {}, references=["docs"])
    docs = harness.settings.config_path / "docs"
    docs.mkdir()
    (docs / "spec.md").write_text("the spec")
    (harness.settings.config_path / "private.txt").write_text("no")
    ctx = attempt_context(harness, "A-1")

    read = use(ctx, "read_file", path="docs/spec.md")
    private = use(ctx, "read_file", path="private.txt")

    assert read.result["content"] == "the spec"
    assert private.result["error"] == "File not found"


def test_twenty_concurrent_writes_to_one_path_leave_a_whole_file(
    two_cards: Harness,
) -> None:
    ctx = attempt_context(two_cards, "A-1")
    contents = [chr(ord("a") + n) * (64 * 1024 + n) for n in range(20)]
    barrier = threading.Barrier(20)
    results = []

    def write(content: str) -> None:
        barrier.wait()
        results.append(
            use(ctx, "write_file", path="agent_output/same.txt", content=content)
        )

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    folder = ctx.scope.workspace / "agent_output"
    assert all(result.ok for result in results)
    assert (folder / "same.txt").read_text() in contents
    assert sorted(p.name for p in folder.iterdir()) == ["same.txt"]


# Visibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("tool", REMOVED_TOOLS)
def test_removed_tools_do_not_exist(two_cards: Harness, tool: str) -> None:
    ctx = attempt_context(two_cards, "A-1")

    outcome = use(ctx, tool, prompt="x")

    assert outcome.result == {"ok": False, "error": f"Unknown tool '{tool}'"}
    assert not outcome.violation
    assert tool not in ctx.visible_tools


def test_tools_outside_the_role_are_not_available(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1", seat="verifier", review=True)

    outcome = use(ctx, "write_file", path="a.txt", content="x")

    assert outcome.result == {
        "ok": False,
        "error": "Tool 'write_file' is not available to role 'integrity_guard'",
    }
    assert "get_issue_context" in ctx.visible_tools
    assert "update_issue_status" in ctx.visible_tools


def test_a_role_listing_no_tools_sees_every_tool(harness: Harness) -> None:
    harness.setup([{"id": "A-1", "seat": "builder"}], {})
    harness.write("roles", "coder", {"description": "Anything goes."})

    ctx = attempt_context(harness, "A-1")

    assert "create_issue" in ctx.visible_tools
    assert "nominate_card" in ctx.visible_tools


# iDesign ------------------------------------------------------------------------------


def _idesign_context(harness: Harness, enabled: bool):
    harness.setup(
        [{"id": "A-1", "seat": "builder"}],
        {},
        architecture_governance={"idesign": enabled},
    )
    return attempt_context(harness, "A-1")


def test_idesign_rules_apply_only_when_enabled(harness_factory) -> None:
    off = _idesign_context(harness_factory(), enabled=False)
    on = _idesign_context(harness_factory(), enabled=True)

    free = use(off, "write_file", path="managers/helpers.py", content="x = 1\n")
    checked = use(on, "write_file", path="managers/helpers.py", content="x = 1\n")

    assert free.ok
    assert checked.violation
    assert "NAMING_VIOLATION" in checked.result["error"]


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("accessors/db_accessor.py", "from sqlalchemy.engine import create_engine\n"),
        ("managers/notes.md", "no code here"),
        ("agent_output/tool.py", "def run():\n    return 1\n"),
    ],
)
def test_idesign_has_no_false_positives(harness: Harness, path: str, content: str):
    ctx = _idesign_context(harness, enabled=True)

    outcome = use(ctx, "write_file", path=path, content=content)

    assert outcome.ok, outcome.result


def test_idesign_ast_violation_is_reported(harness: Harness) -> None:
    ctx = _idesign_context(harness, enabled=True)

    outcome = use(
        ctx, "write_file", path="engines/pricing_engine.py", content="def (:\n"
    )

    assert outcome.violation
    assert outcome.result["error"].startswith("iDesign AST Violation: Syntax Error")


# Cards --------------------------------------------------------------------------------


def test_create_issue_makes_a_ready_child_card(two_cards: Harness) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")

    outcome = use(ctx, "create_issue", summary="Split the parser", seat="Builder")

    child = two_cards.card(outcome.result["issue_id"])
    assert outcome.ok
    assert child.id.startswith("ISSUE-") and len(child.id) == 14
    assert child.id[6:] == child.id[6:].upper()
    assert (child.status, child.parent_id, child.build_id, child.epic_id) == (
        "ready",
        "A-1",
        "build-t_epic",
        "t_epic",
    )
    assert (child.seat, child.priority, child.session_id) == (
        "builder",
        "2.0",
        "testrun",
    )
    created = _events(two_cards, "card_created")[-1]["data"]
    assert created["parent_id"] == "A-1"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"summary": "abc", "seat": "builder"}, "at least 5"),
        ({"summary": "Long enough", "seat": "astronaut"}, "seat"),
        (
            {"summary": "Long enough", "seat": "builder", "depends_on": "A-1"},
            "depends_on",
        ),
    ],
)
def test_create_issue_checks_its_arguments(two_cards: Harness, args, error) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")

    outcome = use(ctx, "create_issue", **args)

    assert not outcome.ok and error in outcome.result["error"]


def test_create_issue_is_limited_per_run(two_cards: Harness) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")

    outcomes = [
        use(ctx, "create_issue", summary=f"Child number {n}", seat="builder")
        for n in range(21)
    ]

    assert all(o.ok for o in outcomes[:20])
    assert not outcomes[20].ok
    assert "At most 20" in outcomes[20].result["error"]


def test_comments_go_on_the_own_card_or_a_child(two_cards: Harness) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")
    child = use(ctx, "create_issue", summary="A child card", seat="builder")

    own = use(ctx, "add_issue_comment", comment="Working on it")
    on_child = use(
        ctx, "add_issue_comment", comment="Do this", issue_id=child.result["issue_id"]
    )
    other = use(ctx, "add_issue_comment", comment="Hi", issue_id="A-2")
    empty = use(ctx, "add_issue_comment", comment="")
    huge = use(ctx, "add_issue_comment", comment="x" * 10_001)

    assert own.ok and on_child.ok
    assert isinstance(own.result["comment_id"], int)
    assert two_cards.comments("A-1")[0].author == "builder"
    assert not other.ok and not empty.ok and not huge.ok


def test_get_issue_context_of_own_and_other_build_cards(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-2")
    two_cards.cards.add_comment("A-1", "reviewer", "Looks good", run_id=None)

    own = use(ctx, "get_issue_context")
    other = use(ctx, "get_issue_context", issue_id="A-1")
    unknown = use(ctx, "get_issue_context", issue_id="Z-9")

    assert own.result["id"] == "A-2"
    assert own.result["depends_on"] == ["A-1"]
    assert set(own.result) == {
        "ok",
        "id",
        "summary",
        "status",
        "wait_reason",
        "note",
        "description",
        "requirements",
        "depends_on",
        "comments",
        "verification",
    }
    assert other.result["note"] == "first"
    assert other.result["comments"][0]["content"] == "Looks good"
    assert unknown.result == {"ok": False, "error": "Card Z-9 not found"}


def _in_progress(harness: Harness, *card_ids: str) -> None:
    for card_id in card_ids:
        harness.cards.move(card_id, "work_start", run_id=None)


def test_status_of_another_card_cannot_be_changed_by_a_worker(
    two_cards: Harness,
) -> None:
    ctx = attempt_context(two_cards, "A-1")
    _in_progress(two_cards, "A-1", "A-2")

    outcome = use(ctx, "update_issue_status", status="code_review", issue_id="A-2")

    assert outcome.violation
    assert outcome.result["error"] == "Security violation: cannot change status of A-2"
    assert two_cards.card("A-2").status == "in_progress"


def test_reviewer_may_change_any_card_of_the_build(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1", seat="verifier", review=True)
    _in_progress(two_cards, "A-2")

    outcome = use(ctx, "update_issue_status", status="code_review", issue_id="A-2")

    assert outcome.ok
    assert two_cards.card("A-2").status == "code_review"


def test_creator_may_move_its_child(two_cards: Harness) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")
    child = use(ctx, "create_issue", summary="A child card", seat="builder").result

    outcome = use(
        ctx, "update_issue_status", status="canceled", issue_id=child["issue_id"]
    )

    assert outcome.ok
    assert two_cards.card(child["issue_id"]).status == "canceled"


def test_status_write_records_history_and_event(two_cards: Harness) -> None:
    ctx = attempt_context(two_cards, "A-1")
    _in_progress(two_cards, "A-1")

    outcome = use(
        ctx,
        "update_issue_status",
        status="Blocked",
        wait_reason="Dependency",
        comment="Waiting on the API",
    )

    from app.runs import card_history

    card = two_cards.card("A-1")
    with two_cards.db.reader() as session:
        history = card_history(session, "A-1")
    changed = [
        e for e in _events(two_cards, "card_status_changed") if e["card_id"] == "A-1"
    ][-1]
    assert outcome.result == {"ok": True, "issue_id": "A-1", "status": "blocked"}
    assert (card.status, card.wait_reason) == ("blocked", "dependency")
    assert history[-1]["action"] == "Set Status to 'blocked'"
    assert (history[-1]["role"], history[-1]["from_status"]) == (
        "builder",
        "in_progress",
    )
    assert changed["data"] == {
        "issue_id": "A-1",
        "from": "in_progress",
        "to": "blocked",
        "by": "builder",
        "wait_reason": "dependency",
    }
    assert two_cards.comments("A-1")[-1].content == "Waiting on the API"


@pytest.mark.parametrize("organization", [None, {}], ids=["no-file", "empty-file"])
@pytest.mark.parametrize(
    ("seat", "start", "request_", "error"),
    [
        (
            "builder",
            "ready",
            {"status": "done"},
            "Invalid transition for issue: ready -> done",
        ),
        (
            "builder",
            "in_progress",
            {"status": "in_progress"},
            "Invalid transition for issue: in_progress -> in_progress",
        ),
        ("builder", "in_progress", {"status": "flying"}, "Invalid status: flying"),
        (
            "builder",
            "in_progress",
            {"status": "blocked"},
            "wait_reason is required "
            "(one of: resource, dependency, review, input, system)",
        ),
        (
            "builder",
            "code_review",
            {"status": "done"},
            "Transition to done requires integrity_guard",
        ),
        ("verifier", "code_review", {"status": "done"}, None),
    ],
)
def test_four_checks_hold_with_or_without_an_organization(
    two_cards: Harness, organization, seat, start, request_, error
) -> None:
    if organization is not None:
        org_file = two_cards.settings.config_path / "organization.json"
        org_file.write_text(json.dumps(organization))
    ctx = attempt_context(two_cards, "A-1", seat=seat, review=seat == "verifier")
    if start != "ready":
        two_cards.set_columns("A-1", status=start)

    outcome = use(ctx, "update_issue_status", **request_)

    if error is None:
        assert outcome.ok
    else:
        assert outcome.violation
        assert outcome.result["error"] == error
        assert two_cards.card("A-1").status == start


def test_done_needs_a_passing_verification_when_the_card_has_a_fixture(
    harness: Harness,
) -> None:
    verification = {
        "fixture_path": "verification/demo/calc_fixture.py",
        "scenarios": [
            {"id": "S1", "input_data": {"a": 1, "b": 1}, "expected_output": 2}
        ],
    }
    harness.setup([{"id": "V-1", "seat": "builder", "verification": verification}], {})
    ctx = attempt_context(harness, "V-1", seat="verifier", review=True)
    harness.set_columns("V-1", status="code_review")

    outcome = use(ctx, "update_issue_status", status="done")

    assert outcome.result["error"] == "Verification failing: 0/0 passed"


def test_nominations_and_refinements_are_events(two_cards: Harness) -> None:
    two_cards.write("roles", "coder", {"description": "All tools."})
    ctx = attempt_context(two_cards, "A-1")

    nominated = use(ctx, "nominate_card", card="A-2", reason="urgent")
    proposed = use(ctx, "refinement_proposal", idea="split it")

    assert nominated.ok and proposed.ok
    assert _events(two_cards, "card_nomination")[0]["data"] == {
        "card": "A-2",
        "reason": "urgent",
        "nominated_by": "builder",
    }
    assert _events(two_cards, "refinement_proposed")[0]["data"]["idea"] == "split it"


def test_a_tool_that_breaks_returns_an_internal_error(
    two_cards: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.engine import tools

    def broken(ctx, args):
        raise RuntimeError("boom")

    monkeypatch.setitem(tools._HANDLERS, "list_directory", broken)
    ctx = attempt_context(two_cards, "A-1")

    outcome = use(ctx, "list_directory")

    assert outcome.result == {"ok": False, "error": "internal error in list_directory"}
    assert (
        _events(two_cards, "internal_error")[0]["data"]["where"]
        == "tool list_directory"
    )
