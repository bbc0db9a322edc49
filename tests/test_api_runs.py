"""Run routes: list and paging, detail, sessions, snapshots, halt, metrics, backlog."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.api import schemas
from app.models.base import dump_json
from app.models.runtime import Event, Session, SessionSnapshot
from tests.api_support import add_card, add_event, add_run, at


def get(client, headers, url, **query):
    return client.get(url, query_string=query, headers=headers)


# List and paging ----------------------------------------------------------------------


@pytest.fixture
def twelve_runs(runtime_db):
    for index in range(12):
        add_run(
            runtime_db,
            f"run{index:04d}",
            status="done" if index % 3 else "failed",
            type="rock" if index == 5 else "epic",
            builds=[f"b{index}"],
            queued_at=at(index),
        )


def test_runs_are_newest_first_ten_by_default_with_the_total(
    client, auth_headers, twelve_runs
):
    response = get(client, auth_headers, "/v1/runs")

    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "12"
    ids = [run["id"] for run in response.get_json()]
    assert ids == [f"run{index:04d}" for index in range(11, 1, -1)]
    for run in response.get_json():
        schemas.RunOut.model_validate(run)


def test_runs_page_with_limit_and_offset(client, auth_headers, twelve_runs):
    response = get(client, auth_headers, "/v1/runs", limit=5, offset=10)

    assert response.headers["X-Total-Count"] == "12"
    assert [run["id"] for run in response.get_json()] == ["run0001", "run0000"]


def test_runs_filter_by_status_and_type(client, auth_headers, twelve_runs):
    failed = get(client, auth_headers, "/v1/runs", status="failed", limit=100)
    rocks = get(client, auth_headers, "/v1/runs", type="rock")

    assert failed.headers["X-Total-Count"] == "4"
    assert {run["status"] for run in failed.get_json()} == {"failed"}
    assert [run["id"] for run in rocks.get_json()] == ["run0005"]


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "sleeping"}, "status"),
        ({"type": "saga"}, "type"),
    ],
)
def test_bad_paging_and_filters_are_422(client, auth_headers, query, field):
    response = get(client, auth_headers, "/v1/runs", **query)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", field]


def test_limit_100_is_allowed(client, auth_headers, twelve_runs):
    assert len(get(client, auth_headers, "/v1/runs", limit=100).get_json()) == 12


# Detail, sessions, snapshot -----------------------------------------------------------


def test_run_detail_counts_cards_turns_and_tokens(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234", status="running", builds=["build-demo"])
    add_card(runtime_db, "DEMO-1", status="done")
    add_card(runtime_db, "DEMO-2", status="ready")
    add_card(runtime_db, "OTHER-1", build_id="elsewhere")
    add_event(runtime_db, "turn_complete", {"issue_id": "DEMO-1"}, run_id="abcd1234")
    add_event(runtime_db, "model_usage", {"total_tokens": 40}, run_id="abcd1234")
    add_event(runtime_db, "model_usage", {"total_tokens": 2}, run_id="abcd1234")

    response = get(client, auth_headers, "/v1/runs/abcd1234")

    assert response.status_code == 200
    body = schemas.RunDetailOut.model_validate(response.get_json())
    assert body.counts.model_dump() == {
        "cards": {"done": 1, "ready": 1},
        "turns": 1,
        "tokens": 42,
    }
    assert body.builds == ["build-demo"]


def test_session_is_the_run_without_counts(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234", transcript=dump_json([{"step_index": 0}]))

    body = get(client, auth_headers, "/v1/sessions/abcd1234").get_json()

    assert body["id"] == "abcd1234"
    assert body["transcript"] == [{"step_index": 0}]
    assert "counts" not in body


@pytest.mark.parametrize(
    "url",
    [
        "/v1/runs/nope0000",
        "/v1/sessions/nope0000",
        "/v1/sessions/nope0000/snapshot",
        "/v1/runs/nope0000/metrics",
        "/v1/runs/nope0000/backlog",
    ],
)
def test_unknown_run_ids_are_404(client, auth_headers, url):
    response = get(client, auth_headers, url)

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Not Found"}


def test_snapshot(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234")
    with runtime_db.transaction() as session:
        session.add(
            SessionSnapshot(
                session_id="abcd1234",
                config_json=dump_json({"epic": "demo", "build_id": "build-demo"}),
                log_history=dump_json(
                    [{"role": "coder", "issue": "DEMO-1", "content": "x"}]
                ),
                captured_at=at(5),
            )
        )

    response = get(client, auth_headers, "/v1/sessions/abcd1234/snapshot")

    assert response.status_code == 200
    assert response.get_json() == {
        "session_id": "abcd1234",
        "config_json": {"epic": "demo", "build_id": "build-demo"},
        "log_history": [{"role": "coder", "issue": "DEMO-1", "content": "x"}],
        "captured_at": "2026-03-02T10:05:00.000000+00:00",
    }


def test_a_run_without_a_snapshot_yet_is_404(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234")

    assert (
        get(client, auth_headers, "/v1/sessions/abcd1234/snapshot").status_code == 404
    )


# Halt ---------------------------------------------------------------------------------


def halt(client, headers, run_id):
    return client.post(f"/v1/runs/{run_id}/halt", headers=headers)


def run_row(db, run_id) -> Session:
    with db.reader() as session:
        return session.get(Session, run_id)


def event_names(db, run_id) -> list[str]:
    with db.reader() as session:
        return list(
            session.scalars(
                select(Event.event).where(Event.run_id == run_id).order_by(Event.id)
            )
        )


def test_halting_a_queued_run_ends_it_at_once(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234", status="queued")

    response = halt(client, auth_headers, "abcd1234")

    assert response.status_code == 200
    assert response.get_json() == {"session_id": "abcd1234", "status": "halted"}
    row = run_row(runtime_db, "abcd1234")
    assert row.status == "halted" and row.end_time is not None
    assert event_names(runtime_db, "abcd1234") == ["run_halted", "run_finished"]
    with runtime_db.reader() as session:
        finished = session.scalars(
            select(Event).where(Event.event == "run_finished")
        ).one()
    data = json.loads(finished.data)
    assert data["status"] == "halted" and data["run_id"] == "abcd1234"
    assert set(data) == {"run_id", "status", "cards", "turns", "tokens", "duration_ms"}


def test_halting_a_running_run_asks_it_to_stop(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234", status="running")

    response = halt(client, auth_headers, "abcd1234")

    assert response.status_code == 202
    assert response.get_json() == {"session_id": "abcd1234", "status": "halting"}
    row = run_row(runtime_db, "abcd1234")
    assert row.status == "running" and row.halt_requested is True
    assert event_names(runtime_db, "abcd1234") == []


@pytest.mark.parametrize("status", ["done", "failed", "halted", "interrupted"])
def test_halting_a_finished_run_is_409(client, auth_headers, runtime_db, status):
    add_run(runtime_db, "abcd1234", status=status)

    response = halt(client, auth_headers, "abcd1234")

    assert response.status_code == 409
    assert response.get_json() == {"detail": "Run is not active"}
    assert run_row(runtime_db, "abcd1234").status == status


def test_halting_an_unknown_run_is_404(client, auth_headers):
    assert halt(client, auth_headers, "nope0000").status_code == 404


def test_a_queued_run_claimed_meanwhile_is_asked_to_halt_instead(
    client, auth_headers, runtime_db, monkeypatch
):
    """The dispatcher claims the row between the read and the conditional update."""
    from app.api import runs as runs_routes

    add_run(runtime_db, "abcd1234", status="queued")
    original = runs_routes._request_halt

    def claim_first(session, row):
        session.execute(
            Session.__table__.update()
            .where(Session.id == row.id)
            .values(status="running")
        )
        return original(session, row)

    monkeypatch.setattr(runs_routes, "_request_halt", claim_first)

    response = halt(client, auth_headers, "abcd1234")

    assert response.status_code == 202
    row = run_row(runtime_db, "abcd1234")
    assert row.status == "running" and row.halt_requested is True


# Metrics (API-11) and backlog ---------------------------------------------------------


def test_run_metrics_per_role(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234", status="running")
    add_event(runtime_db, "run_started", {"run_id": "abcd1234"}, run_id="abcd1234")
    add_event(
        runtime_db,
        "model_usage",
        {"total_tokens": 100},
        role="coder",
        run_id="abcd1234",
    )
    add_event(
        runtime_db,
        "tool_call",
        {"tool": "write_file", "args": {"path": "agent_output/calc.py"}, "lines": 2},
        role="coder",
        run_id="abcd1234",
    )
    add_event(
        runtime_db, "model_usage", {"total_tokens": 7}, role="coder", run_id="abcd1234"
    )
    add_event(
        runtime_db,
        "tool_call",
        {"tool": "update_issue_status", "args": {"status": "code_review"}},
        role="coder",
        run_id="abcd1234",
    )
    add_event(
        runtime_db,
        "tool_call",
        {"tool": "read_file", "args": {"path": "agent_output/calc.py"}},
        role="integrity_guard",
        run_id="abcd1234",
    )
    add_event(
        runtime_db,
        "model_usage",
        {"total_tokens": 999},
        role="coder",
        run_id="other000",
    )

    response = get(client, auth_headers, "/v1/runs/abcd1234/metrics")

    assert response.status_code == 200
    assert response.get_json() == {
        "system": {
            "tokens": 0,
            "lines_written": 0,
            "last_action": "Idle",
            "detail": "",
        },
        "coder": {
            "tokens": 107,
            "lines_written": 2,
            "last_action": "Executing update_issue_status",
            "detail": "Wrote agent_output/calc.py",
        },
        "integrity_guard": {
            "tokens": 0,
            "lines_written": 0,
            "last_action": "Executing read_file",
            "detail": "",
        },
    }


def test_run_metrics_without_events_is_empty(client, auth_headers, runtime_db):
    add_run(runtime_db, "abcd1234")

    assert get(client, auth_headers, "/v1/runs/abcd1234/metrics").get_json() == {}


def test_backlog_lists_the_cards_of_the_runs_builds_and_epic_oldest_first(
    client, auth_headers, runtime_db
):
    add_run(
        runtime_db,
        "abcd1234",
        builds=["build-demo"],
        params_json=dump_json({"epics": ["demo"]}),
    )
    add_card(runtime_db, "DEMO-2", created_at=at(2))
    add_card(runtime_db, "DEMO-1", created_at=at(1))
    add_card(runtime_db, "ISSUE-ABCDEF01", created_at=at(3), parent_id="DEMO-1")
    add_card(runtime_db, "OTHER-1", epic_id="other", created_at=at(0))
    add_card(runtime_db, "DEMO-1@b2", build_id="b2", created_at=at(0))

    response = get(client, auth_headers, "/v1/runs/abcd1234/backlog")

    assert response.status_code == 200
    assert [card["id"] for card in response.get_json()] == [
        "DEMO-1",
        "DEMO-2",
        "ISSUE-ABCDEF01",
    ]
    for card in response.get_json():
        schemas.CardOut.model_validate(card)
