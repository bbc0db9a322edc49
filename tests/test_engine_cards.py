"""Cards, builds, seeding and resume (ENG-3) and the engine's own moves (ENG-4)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.engine.seeding import seed_epic
from app.engine.sprint import sprint_for
from app.engine.state_machine import ENGINE_MOVES
from app.models.base import dump_json, load_json, utcnow
from app.runs import card_history
from tests.engine_support import (
    Harness,
    call,
    harness_factory_fixture,
    status,
)

DONE_FLOW = {"coder": [status("code_review")], "integrity_guard": [status("done")]}


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


def _history(harness: Harness, card_id: str) -> list[dict]:
    with harness.db.reader() as session:
        return card_history(session, card_id)


def test_issues_without_ids_get_stable_derived_ids(harness: Harness) -> None:
    harness.setup(
        [{"summary": "First", "seat": "builder"}, {"summary": "Second"}],
        DONE_FLOW,
        epic="my-epic",
    )

    harness.run("my-epic")

    first = harness.card("MY_EPIC-1")
    second = harness.card("MY_EPIC-2")
    assert (first.summary, second.summary) == ("First", "Second")
    assert first.epic_id == "my-epic" and first.build_id == "build-my-epic"


def test_a_named_build_gets_at_build_ids_and_rewritten_dependencies(
    harness: Harness,
) -> None:
    harness.setup(
        [{"id": "B-1", "seat": "builder"}, {"id": "B-2", "depends_on": ["B-1"]}],
        {},
    )

    harness.run("t_epic", build_id="feature.x")

    card = harness.card("B-2@feature.x")
    assert card.build_id == "feature.x"
    assert load_json(card.depends_on_json, []) == ["B-1@feature.x"]
    assert harness.cards.get("B-2") is None


def test_seeded_cards_carry_the_asset_and_the_sprint(harness: Harness) -> None:
    verification = {
        "fixture_path": "verification/x.py",
        "scenarios": [{"id": "S1", "input_data": {"a": 1}, "expected_output": 1}],
    }
    issue = {
        "id": "S-1",
        "summary": "Seeded",
        "seat": "Builder",
        "type": "bug",
        "priority": "low",
        "note": "n",
        "description": "d",
        "requirements": "r",
        "max_retries": 5,
        "status": "done",
        "verification": verification,
    }
    harness.setup([issue], {})

    run_id, result = harness.run("t_epic")

    card = harness.card("S-1")
    assert result == "failed"  # the script has no replies: nothing gets done
    assert (card.seat, card.type, card.priority) == ("Builder", "bug", "1.0")
    assert (card.note, card.description, card.requirements) == ("n", "d", "r")
    assert card.max_retries == 5
    assert card.session_id == run_id
    assert card.sprint == sprint_for(card.created_at)
    assert load_json(card.verification_json, {})["fixture_path"] == "verification/x.py"
    created = harness.events_of(run_id, "card_created")[0]["data"]
    assert created == {
        "issue_id": "S-1",
        "parent_id": None,
        "build_id": "build-t_epic",
        "summary": "Seeded",
    }


def test_resume_keeps_card_states_and_frees_in_progress_cards(
    harness: Harness,
) -> None:
    harness.setup(
        [{"id": "R-1", "seat": "builder"}, {"id": "R-2", "seat": "builder"}],
        DONE_FLOW,
    )
    harness.run("t_epic")
    harness.set_columns("R-2", status="in_progress", assignee="builder")

    run_id, result = harness.run("t_epic")

    worked = {e["card_id"] for e in harness.events_of(run_id, "turn_start")}
    resumed = _history(harness, "R-2")
    assert result == "done"
    assert worked == {"R-2"}
    assert ("in_progress", "ready", "system") in [
        (h["from_status"], h["to_status"], h["role"]) for h in resumed
    ]


def test_reset_starts_every_card_of_the_scope_afresh(harness: Harness) -> None:
    harness.setup([{"id": "Z-1", "seat": "builder"}], DONE_FLOW)
    harness.run("t_epic")
    harness.set_columns("Z-1", retry_count=2)

    run_id, result = harness.run("t_epic", reset=True)

    moves = [
        (e["data"]["from"], e["data"]["to"])
        for e in harness.events_of(run_id, "card_status_changed")
    ]
    assert result == "done"
    assert moves[0] == ("done", "ready")
    assert harness.card("Z-1").retry_count == 0


def test_reset_clears_wait_reason_and_retries_of_ready_cards(harness: Harness) -> None:
    harness.setup([{"id": "Z-1", "seat": "builder"}], DONE_FLOW)
    harness.run("t_epic")
    harness.set_columns("Z-1", status="blocked", wait_reason="input", retry_count=4)

    harness.run("t_epic", reset=True)

    card = harness.card("Z-1")
    assert (card.status, card.wait_reason, card.retry_count) == ("done", None, 0)


def test_writes_name_their_columns_and_wipe_nothing(harness: Harness) -> None:
    harness.setup([{"id": "W-1", "seat": "builder", "note": "keep me"}], DONE_FLOW)
    harness.run("t_epic")
    old = utcnow() - timedelta(days=3)
    harness.set_columns(
        "W-1",
        status="in_progress",
        resolution="kept",
        metrics_json=dump_json({"lines": 3}),
        credits_spent=1.5,
        created_at=old,
        updated_at=old,
    )

    harness.run("t_epic")

    card = harness.card("W-1")
    assert card.status == "done"
    assert (card.resolution, card.note, card.credits_spent) == ("kept", "keep me", 1.5)
    assert load_json(card.metrics_json, {}) == {"lines": 3}
    assert abs((card.created_at - old).total_seconds()) < 1
    assert card.updated_at > old + timedelta(days=2)


def test_every_status_write_is_in_the_history(harness: Harness) -> None:
    harness.setup([{"id": "H-1", "seat": "builder"}], DONE_FLOW)

    run_id, _ = harness.run("t_epic")

    history = _history(harness, "H-1")
    events = [
        e
        for e in harness.events_of(run_id, "card_status_changed")
        if e["card_id"] == "H-1"
    ]
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        ("ready", "in_progress"),
        ("in_progress", "code_review"),
        ("code_review", "done"),
    ]
    assert [h["role"] for h in history] == ["system", "builder", "verifier"]
    assert history[-1]["action"] == "Set Status to 'done'"
    assert len(events) == len(history)


@pytest.mark.parametrize(
    ("move", "start", "allowed"),
    [
        ("work_start", "ready", True),
        ("work_start", "blocked", False),
        ("review_start", "ready_for_testing", True),
        ("send_back", "in_progress", True),
        ("send_back", "done", False),
        ("failure", "code_review", True),
        ("failure", "done", False),
        ("halt_cleanup", "in_progress", True),
    ],
)
def test_engine_moves_bypass_agent_checks_but_only_named_moves(
    harness: Harness, move: str, start: str, allowed: bool
) -> None:
    harness.setup([{"id": "E-1", "seat": "builder"}], {})
    seed_epic(harness.cards, harness.store.load_epic("t_epic"), "build-t_epic", None)
    harness.set_columns("E-1", status=start)

    change = harness.cards.move("E-1", move, run_id=None, wait_reason="system")

    assert change.ok is allowed
    assert harness.card("E-1").status == (ENGINE_MOVES[move][1] if allowed else start)


def test_create_issue_child_is_scheduled_in_a_later_tick_of_the_run(
    harness: Harness,
) -> None:
    harness.setup([{"id": "P-1", "seat": "builder"}], {})
    harness.write("roles", "coder", {"description": "Builds things."})
    harness.write(
        "scripts",
        "t_script",
        {
            "schema": "orket-script/1",
            "replies": {
                "P-1/coder": [
                    [
                        call("create_issue", summary="Follow-up work", seat="builder"),
                        status("code_review"),
                    ]
                ],
                "coder": [status("code_review")],
                "integrity_guard": [status("done")],
            },
        },
    )

    run_id, result = harness.run("t_epic")

    created = harness.events_of(run_id, "card_created")
    child_id = created[-1]["data"]["issue_id"]
    events = harness.events_of(run_id)
    created_at = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "card_created" and e["card_id"] == child_id
    )
    parent_work_end = min(
        i
        for i, e in enumerate(events)
        if e["card_id"] == "P-1" and e["event"] == "turn_complete"
    )
    child_first_turn = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "turn_start" and e["card_id"] == child_id
    )
    assert result == "done"
    assert harness.card(child_id).status == "done"
    assert harness.card(child_id).parent_id == "P-1"
    assert created_at < parent_work_end < child_first_turn
