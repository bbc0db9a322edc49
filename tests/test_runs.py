"""Target resolution, enqueueing with the build conflict check, and the Run and Card
objects (API-4, API-8, JOB-3)."""

from __future__ import annotations

import re
import threading

import pytest

from app import runs
from app.runs import (
    AssetInvalid,
    BadBuildId,
    NoTarget,
    RunConflict,
    TargetNotFound,
    card_to_dict,
    department_from,
    enqueue_run,
    resolve_target,
    run_to_dict,
    target_from,
)
from app.serving.startup import copy_packaged_fixtures
from tests.engine_support import Harness, harness_factory_fixture, status

FLOW = {"coder": [status("code_review")], "integrity_guard": [status("done")]}


@pytest.fixture
def harness_factory(settings_factory):
    yield from harness_factory_fixture(settings_factory)


@pytest.fixture
def harness(harness_factory) -> Harness:
    return harness_factory()


def _enqueue(harness: Harness, target: str | None, **request) -> dict:
    return enqueue_run(
        harness.settings, harness.db, harness.events, target=target, **request
    )


def _resolve(harness: Harness, target: str, **request):
    return resolve_target(harness.settings, harness.db, target=target, **request)


# Step 1: target and department --------------------------------------------------------


def test_target_is_the_issue_id_else_the_path_stem() -> None:
    assert target_from("DEMO-1", "model/core/epics/demo.json") == "DEMO-1"
    assert target_from(None, "model/core/epics/demo.json") == "demo"
    with pytest.raises(NoTarget) as raised:
        target_from(None, None)
    assert (raised.value.status, raised.value.detail) == (400, "No asset ID provided.")


@pytest.mark.parametrize(
    ("department", "path", "expected"),
    [
        ("sales", "model/core/epics/x.json", "sales"),
        (None, "model/engineering/epics/x.json", "engineering"),
        (None, "config/epics/x.json", "core"),
        (None, None, "core"),
    ],
)
def test_department_is_the_field_else_from_the_path(department, path, expected):
    assert department_from(department, path) == expected


# Step 2: resolution -------------------------------------------------------------------


def test_epic_resolves_to_its_default_or_given_build(harness: Harness) -> None:
    default = _resolve(harness, "demo")
    named = _resolve(harness, "demo", build_id="demo-a")

    assert (default.type, default.build_id, default.builds) == (
        "epic",
        "build-demo",
        ("build-demo",),
    )
    assert (named.build_id, named.builds) == ("demo-a", ("demo-a",))


@pytest.mark.parametrize("build_id", ["", "has space", "a/b", "x" * 65, "ü"])
def test_bad_build_ids_are_refused(harness: Harness, build_id: str) -> None:
    with pytest.raises(BadBuildId) as raised:
        _resolve(harness, "demo", build_id=build_id)

    assert raised.value.status == 422


def test_rock_builds_are_its_epics_builds_or_the_given_one(harness: Harness) -> None:
    harness.write("rocks", "launch", {"epics": [{"epic": "demo"}, {"epic": "other"}]})

    default = _resolve(harness, "launch")
    shared = _resolve(harness, "launch", build_id="shared")

    assert default.type == "rock"
    assert default.builds == ("build-demo", "build-other")
    assert default.build_id == "rock-build-launch"
    assert (shared.builds, shared.build_id) == (("shared",), "shared")


def test_an_existing_card_runs_in_its_own_build(harness: Harness) -> None:
    harness.setup([{"id": "C-1", "seat": "builder"}], FLOW)
    harness.run("t_epic", build_id="b7")

    resolved = _resolve(harness, "C-1@b7")
    by_build = _resolve(harness, "C-1", build_id="b7")

    assert (resolved.type, resolved.builds) == ("issue", ("b7",))
    assert resolved.params["card_id"] == "C-1@b7"
    assert by_build.params["card_id"] == "C-1@b7"


def test_an_epic_issue_without_a_card_resolves_by_explicit_or_derived_id(
    harness: Harness,
) -> None:
    harness.setup([{"id": "X-1"}, {"summary": "no id"}], {})

    explicit = _resolve(harness, "X-1")
    derived = _resolve(harness, "T_EPIC-2", build_id="b2")

    assert (explicit.type, explicit.builds) == ("issue", ("build-t_epic",))
    assert explicit.params["epic"] == "t_epic"
    assert derived.params["card_id"] == "T_EPIC-2@b2"
    assert derived.builds == ("b2",)


def test_unknown_target_is_not_found(harness: Harness) -> None:
    with pytest.raises(TargetNotFound) as raised:
        _resolve(harness, "nothing-here")

    assert (raised.value.status, raised.value.detail) == (
        404,
        "Card nothing-here not found.",
    )


def test_resolution_is_limited_to_the_type(harness: Harness) -> None:
    with pytest.raises(TargetNotFound):
        _resolve(harness, "demo", type="rock")


def test_an_invalid_asset_is_422_naming_the_problem(harness: Harness) -> None:
    harness.write("epics", "broken", {"name": "No team"})

    with pytest.raises(AssetInvalid) as raised:
        _resolve(harness, "broken")

    assert raised.value.status == 422
    assert raised.value.detail.startswith("Asset broken is invalid: ")
    assert "team" in raised.value.detail


# Step 3: enqueueing -------------------------------------------------------------------


def test_enqueue_inserts_a_queued_row_and_emits_run_queued(harness: Harness) -> None:
    answer = _enqueue(harness, None, path="model/core/epics/demo.json", build_id="d1")

    row = harness.run_row(answer["session_id"])
    queued = harness.events_of(answer["session_id"], "run_queued")[0]["data"]
    assert answer == {"session_id": row.id, "status": "queued", "build_id": "d1"}
    assert re.fullmatch(r"[0-9a-f]{8}", row.id)
    assert (row.type, row.target_id, row.source, row.department) == (
        "epic",
        "demo",
        "api",
        "core",
    )
    assert (row.start_time, row.worker_id) == (None, None)
    assert queued == {
        "run_id": row.id,
        "type": "epic",
        "target": "demo",
        "build_id": "d1",
        "builds": ["d1"],
        "source": "api",
    }


def test_cli_enqueue_inserts_a_running_row_for_its_worker(harness: Harness) -> None:
    answer = _enqueue(harness, "demo", source="cli", as_running_worker="cli:h:1")

    row = harness.run_row(answer["session_id"])
    started = harness.events_of(row.id, "run_started")[0]["data"]
    assert answer["status"] == "running"
    assert (row.status, row.worker_id, row.source) == ("running", "cli:h:1", "cli")
    assert row.start_time is not None and row.heartbeat_at is not None
    assert started == {"run_id": row.id, "worker": "cli:h:1"}


def test_an_active_run_on_a_shared_build_is_a_conflict(harness: Harness) -> None:
    first = _enqueue(harness, "demo")
    harness.write("rocks", "launch", {"epics": [{"epic": "demo"}]})

    with pytest.raises(RunConflict) as epic_again:
        _enqueue(harness, "demo")
    with pytest.raises(RunConflict) as rock:
        _enqueue(harness, "launch")

    expected = f"Build build-demo already has an active run {first['session_id']}"
    assert (epic_again.value.status, epic_again.value.detail) == (409, expected)
    assert rock.value.detail == expected


def test_other_builds_and_finished_runs_do_not_conflict(harness: Harness) -> None:
    first = _enqueue(harness, "demo")
    _enqueue(harness, "demo", build_id="elsewhere")
    with harness.db.transaction() as session:
        session.get(runs.RunRow, first["session_id"]).status = "done"

    again = _enqueue(harness, "demo")

    assert again["status"] == "queued"


def test_concurrent_enqueues_of_one_build_admit_exactly_one(harness: Harness) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def enqueue() -> None:
        barrier.wait()
        try:
            _enqueue(harness, "demo")
            outcomes.append("queued")
        except RunConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["conflict"] * 7 + ["queued"]


def test_a_colliding_run_id_is_regenerated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _enqueue(harness, "demo")["session_id"]
    ids = iter([taken, "0badcafe"])
    monkeypatch.setattr(runs, "new_run_id", lambda: next(ids))

    answer = _enqueue(harness, "demo", build_id="other")

    assert answer["session_id"] == "0badcafe"


# The Run and Card objects -------------------------------------------------------------


def test_run_object_with_counts(harness: Harness) -> None:
    copy_packaged_fixtures(harness.settings)
    run_id, _ = harness.run("demo", reset=True)

    with harness.db.reader() as session:
        body = run_to_dict(
            session.get(runs.RunRow, run_id), with_counts=True, session=session
        )

    assert list(body) == [
        "id",
        "type",
        "name",
        "department",
        "status",
        "task_input",
        "target_id",
        "build_id",
        "builds",
        "source",
        "transcript",
        "queued_at",
        "start_time",
        "end_time",
        "error",
        "halt_requested",
        "counts",
    ]
    assert body["status"] == "done" and body["builds"] == ["build-demo"]
    assert isinstance(body["transcript"], list)
    assert body["queued_at"].endswith("+00:00")
    assert body["counts"]["cards"] == {"done": 2}
    assert body["counts"]["turns"] == 5
    assert body["counts"]["tokens"] > 0


def test_card_object_with_comments_and_history(harness: Harness) -> None:
    copy_packaged_fixtures(harness.settings)
    harness.run("demo", reset=True)
    harness.cards.add_comment("DEMO-1", "lead", "Nice", run_id=None)

    with harness.db.reader() as session:
        body = card_to_dict(
            session.get(runs.Issue, "DEMO-1"), session=session, with_detail=True
        )

    assert body["priority"] == 3.0
    assert body["depends_on"] == []
    assert body["verification"]["last_run"]["passed"] == 1
    assert body["metrics"] is None
    assert body["comments"][0]["author"] == "lead"
    assert set(body["comments"][0]) == {"id", "author", "content", "created_at"}
    assert [h["to_status"] for h in body["history"]][-1] == "done"
    assert set(body["history"][0]) == {
        "timestamp",
        "role",
        "action",
        "from_status",
        "to_status",
    }
    assert {
        "id",
        "build_id",
        "epic_id",
        "parent_id",
        "session_id",
        "seat",
        "summary",
        "type",
        "sprint",
        "status",
        "wait_reason",
        "assignee",
        "note",
        "description",
        "requirements",
        "resolution",
        "credits_spent",
        "retry_count",
        "max_retries",
        "created_at",
        "updated_at",
    } <= set(body)
