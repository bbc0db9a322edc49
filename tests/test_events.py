"""The event log (EVT-1, EVT-2) and event retention (EVT-5, `orket prune-events`)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from app import events as events_module
from app import housekeeping
from app.db import Database
from app.events import EventLog, event_record
from app.housekeeping import prune_events
from app.models.base import utcnow
from app.models.runtime import Event
from app.models.webhook import GiteaOutbox, WebhookEvent
from tests.conftest import PROJECT_ROOT


def log_lines(settings: Any) -> list[dict[str, Any]]:
    text = settings.log_file.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def stored(runtime_db: Database) -> list[dict[str, Any]]:
    with runtime_db.reader() as session:
        return [
            event_record(row)
            for row in session.scalars(select(Event).order_by(Event.id))
        ]


@pytest.fixture
def event_log(settings, runtime_db) -> EventLog:
    return EventLog(settings, runtime_db)


# The log ---------------------------------------------------------------------


def test_every_row_has_an_identical_log_line(settings, runtime_db, event_log) -> None:
    event_log.emit(
        "tool_call", {"tool": "write_file", "args": {"path": "a.py"}}, role="coder"
    )
    event_log.emit(
        "card_blocked", {"detail": "ünïcode"}, level="warning", card_id="C-1"
    )
    event_log.emit("run_started", {"run_id": "abcd1234"}, run_id="abcd1234")

    assert log_lines(settings) == stored(runtime_db)
    assert "ünïcode" in settings.log_file.read_text(encoding="utf-8")


def test_a_failed_insert_is_still_logged_with_a_null_id_and_counted(
    settings_factory, tmp_path: Path
) -> None:
    # A directory is not a database: every insert fails.
    settings = settings_factory(runtime_db_url_raw=f"sqlite:///{tmp_path}")
    broken = Database(settings.runtime_db_url, "runtime")
    failures_before = REGISTRY.get_sample_value("orket_event_write_failures_total") or 0
    heard = []
    event_log = EventLog(settings, broken)
    event_log.add_listener(heard.append)

    event_id = event_log.emit("run_queued", {"run_id": "r1"}, run_id="r1")

    assert event_id is None
    [line] = log_lines(settings)
    assert line["id"] is None
    assert (line["event"], line["run_id"], line["data"]) == (
        "run_queued",
        "r1",
        {"run_id": "r1"},
    )
    assert (
        REGISTRY.get_sample_value("orket_event_write_failures_total")
        == failures_before + 1
    )
    assert heard == []  # the stream only carries stored events
    broken.dispose()


CHILD_EMITTER = """
import json, sys
from app import events
from app.config import Settings
from app.db import Database
events.LOG_MAX_BYTES = int(sys.argv[3])
settings = Settings(
    _env_file=None, data_dir=sys.argv[1], runtime_db_url_raw=sys.argv[2]
)
log = events.EventLog(settings, Database(settings.runtime_db_url, "runtime"))
for n in range(int(sys.argv[4])):
    log.emit("child", {"n": n, "pad": "c" * 150})
"""


def test_two_processes_share_one_rotating_log_file(
    settings, runtime_db, monkeypatch
) -> None:
    per_process = 150
    max_bytes = 16_000
    monkeypatch.setattr(events_module, "LOG_MAX_BYTES", max_bytes)
    event_log = EventLog(settings, runtime_db)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_EMITTER,
            str(settings.data_dir),
            settings.runtime_db_url,
            str(max_bytes),
            str(per_process),
        ],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    for n in range(per_process):
        event_log.emit("parent", {"n": n, "pad": "p" * 150})
    assert child.wait(timeout=60) == 0

    files = [settings.log_file, *settings.log_file.parent.glob("orket.log.*")]
    lines = [
        json.loads(line)
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert len(files) > 1  # it rotated
    assert all(path.stat().st_size <= max_bytes + 400 for path in files)
    for name in ("parent", "child"):
        numbers = sorted(line["data"]["n"] for line in lines if line["event"] == name)
        assert numbers == list(range(per_process))
    assert sorted(line["id"] for line in lines) == [r["id"] for r in stored(runtime_db)]


# Retention -----------------------------------------------------------------------


def add_event(runtime_db: Database, name: str, age: timedelta = timedelta()) -> int:
    with runtime_db.transaction() as session:
        row = Event(timestamp=utcnow() - age, event=name, data="{}")
        session.add(row)
        session.flush()
        return row.id


def event_names(runtime_db: Database) -> list[str]:
    return [record["event"] for record in stored(runtime_db)]


def prune(settings, runtime_db, webhook_db, event_log, **options: Any) -> Any:
    return prune_events(settings, runtime_db, webhook_db, event_log, **options)


def test_events_older_than_the_retention_are_deleted(
    settings, runtime_db, webhook_db, event_log
) -> None:
    add_event(runtime_db, "old", timedelta(days=15))
    add_event(runtime_db, "recent", timedelta(days=13))

    result = prune(settings, runtime_db, webhook_db, event_log)

    assert result.events_by_age == 1
    assert event_names(runtime_db) == ["recent", "events_pruned"]
    assert stored(runtime_db)[-1]["data"] == {"deleted": 1}


def test_then_the_oldest_beyond_the_row_cap_are_deleted(
    settings, runtime_db, webhook_db, event_log
) -> None:
    for n in range(10):
        add_event(runtime_db, f"e{n}")

    result = prune(settings, runtime_db, webhook_db, event_log, max_rows=4)

    assert (result.events_by_age, result.events_by_count) == (0, 6)
    assert event_names(runtime_db) == ["e6", "e7", "e8", "e9", "events_pruned"]


def test_pruning_works_in_batches(
    settings, runtime_db, webhook_db, event_log, monkeypatch
) -> None:
    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 3)
    for n in range(10):
        add_event(runtime_db, f"old{n}", timedelta(days=30))

    result = prune(settings, runtime_db, webhook_db, event_log, max_age_days=1)

    assert result.events_deleted == 10
    assert event_names(runtime_db) == ["events_pruned"]


def test_nothing_to_prune_emits_nothing(
    settings, runtime_db, webhook_db, event_log
) -> None:
    add_event(runtime_db, "recent")

    result = prune(settings, runtime_db, webhook_db, event_log)

    assert result.events_deleted == 0
    assert event_names(runtime_db) == ["recent"]


def test_old_webhook_payloads_and_done_outbox_rows_go_too(
    settings, runtime_db, webhook_db, event_log
) -> None:
    old = utcnow() - timedelta(days=31)
    with webhook_db.transaction() as session:
        for delivery, created in (("old", old), ("new", utcnow())):
            session.add(
                WebhookEvent(
                    delivery_id=delivery,
                    event_type="pull_request",
                    body_sha256="0" * 64,
                    signature_ok=True,
                    status="accepted",
                    payload='{"big": true}',
                    created_at=created,
                )
            )
        for key, status, updated in (
            ("done-old", "done", old),
            ("done-new", "done", utcnow()),
            ("pending-old", "pending", old),
        ):
            session.add(
                GiteaOutbox(
                    dedupe_key=key,
                    kind="comment",
                    method="POST",
                    path="/x",
                    status=status,
                    updated_at=updated,
                )
            )

    result = prune(settings, runtime_db, webhook_db, event_log)

    with webhook_db.reader() as session:
        payloads = dict(
            session.execute(
                select(WebhookEvent.delivery_id, WebhookEvent.payload)
            ).all()
        )
        outbox = sorted(session.scalars(select(GiteaOutbox.dedupe_key)))
    assert (result.payloads_dropped, result.outbox_deleted) == (1, 1)
    assert payloads == {"old": None, "new": '{"big": true}'}
    assert outbox == ["done-new", "pending-old"]


def test_prune_events_command_uses_its_options(app, runtime_db) -> None:
    for n in range(5):
        add_event(runtime_db, f"e{n}")
    add_event(runtime_db, "ancient", timedelta(days=3))

    result = app.test_cli_runner().invoke(
        args=["orket", "prune-events", "--max-age-days", "2", "--max-rows", "2"]
    )

    assert result.exit_code == 0, result.output
    assert "[PRUNE] events deleted: 4 (1 by age, 3 over the row cap)" in result.output
    assert event_names(runtime_db) == ["e3", "e4", "events_pruned"]


@pytest.mark.parametrize("option", [["--max-rows", "0"], ["--max-age-days", "0"]])
def test_prune_events_command_refuses_empty_limits(app, option: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=["orket", "prune-events", *option])

    assert result.exit_code == 2
