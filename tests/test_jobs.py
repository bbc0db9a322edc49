"""The job runner and the housekeeper (JOB-1..JOB-5, PROC-4), in-process with
stand-in executors, plus a real server killed mid-run with the real engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from app.db import Database
from app.events import event_record
from app.housekeeping import (
    Housekeeper,
    fail_abandoned_sandboxes,
    interrupt_stale_runs,
)
from app.jobs import (
    Heartbeat,
    JobRunner,
    claim_next_job,
    sweep_interrupted,
)
from app.models.base import dump_json, utcnow
from app.models.runtime import RUN_TYPES, Event, Issue, Sandbox
from app.models.runtime import Session as RunRow
from app.services import Services, build_services
from tests.conftest import API_KEY

SANDBOX_TYPES = ("sandbox_deploy", "sandbox_stop")


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


_sequence = iter(range(1, 10**6))


def add_job(
    db: Database,
    *,
    type: str = "epic",
    status: str = "queued",
    age: timedelta = timedelta(),
    **columns: Any,
) -> str:
    job_id = columns.pop("id", None) or f"j{next(_sequence):07d}"
    with db.transaction() as session:
        session.add(
            RunRow(
                id=job_id,
                type=type,
                status=status,
                target_id=columns.pop("target_id", "t_epic"),
                builds_json=dump_json(columns.pop("builds", [])),
                source="api",
                queued_at=utcnow() - age,
                **columns,
            )
        )
    return job_id


def row(db: Database, job_id: str) -> RunRow:
    with db.reader() as session:
        found = session.get(RunRow, job_id)
    assert found is not None
    return found


def events_of(db: Database, run_id: str | None = None) -> list[dict[str, Any]]:
    query = select(Event).order_by(Event.id)
    if run_id is not None:
        query = query.where(Event.run_id == run_id)
    with db.reader() as session:
        return [event_record(r) for r in session.scalars(query)]


def finished(db: Database, job_id: str) -> bool:
    """Whether the job's last event so far is `run_finished`."""
    return [e["event"] for e in events_of(db, job_id)][-1:] == ["run_finished"]


def set_status(db: Database, job_id: str, status: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(RunRow)
            .where(RunRow.id == job_id, RunRow.status == "running")
            .values(status=status, end_time=utcnow())
        )


@pytest.fixture
def services_factory(settings_factory) -> Iterator[Callable[..., Services]]:
    made: list[Services] = []

    def build(**overrides: Any) -> Services:
        services = build_services(settings_factory(**overrides), "api")
        made.append(services)
        return services

    yield build
    for services in made:
        services.stop()


@pytest.fixture
def services(services_factory) -> Services:
    return services_factory()


class Gate:
    """A stand-in executor: blocks until opened, counts how many run at once."""

    def __init__(self, db: Database, end_status: str = "done") -> None:
        self.db = db
        self.end_status = end_status
        self.opened = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> str:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.opened.wait(20)
        with self._lock:
            self.running -= 1
        set_status(self.db, job_id, self.end_status)
        return self.end_status


# Claims -------------------------------------------------------------------------


def test_a_claim_takes_the_oldest_queued_row_of_its_group(runtime_db) -> None:
    sandbox = add_job(runtime_db, type="sandbox_deploy", age=timedelta(minutes=3))
    epic = add_job(runtime_db, type="epic", age=timedelta(minutes=2))
    issue = add_job(runtime_db, type="issue", age=timedelta(minutes=1))
    add_job(runtime_db, type="rock", status="done", age=timedelta(minutes=9))

    claims = [claim_next_job(runtime_db, RUN_TYPES, "api:h:1") for _ in range(3)]
    sandbox_claim = claim_next_job(runtime_db, SANDBOX_TYPES, "api:h:1")

    assert [c.id if c else None for c in claims] == [epic, issue, None]
    assert sandbox_claim is not None and sandbox_claim.id == sandbox
    claimed = row(runtime_db, epic)
    assert (claimed.status, claimed.worker_id) == ("running", "api:h:1")
    assert claimed.start_time is not None and claimed.heartbeat_at is not None


def test_racing_dispatchers_never_claim_one_row_twice(settings, runtime_db) -> None:
    jobs = {add_job(runtime_db) for _ in range(40)}
    claims: dict[str, list[str]] = {}

    def dispatcher(name: str) -> None:
        db = Database(settings.runtime_db_url, name)
        mine = claims.setdefault(name, [])
        try:
            while (job := claim_next_job(db, RUN_TYPES, name)) is not None:
                mine.append(job.id)
        finally:
            db.dispose()

    threads = [
        threading.Thread(target=dispatcher, args=(f"api:d{n}:1",)) for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    every_claim = [job_id for mine in claims.values() for job_id in mine]
    assert sorted(every_claim) == sorted(jobs)
    for name, mine in claims.items():
        assert {row(runtime_db, job_id).worker_id for job_id in mine} <= {name}


# The runner ------------------------------------------------------------------------


def test_pools_never_run_more_than_their_size(services_factory) -> None:
    services = services_factory(max_runs=2, max_sandbox_jobs=1, dispatch_poll_ms=20)
    db = services.runtime_db
    runs, sandbox_jobs = Gate(db), Gate(db)
    queued_runs = [
        add_job(db, type=t) for t in ("epic", "rock", "issue", "epic", "epic")
    ]
    queued_sandbox = [
        add_job(db, type="sandbox_stop", target_id=f"s{n}") for n in range(3)
    ]
    runner = JobRunner(services, run_executor=runs, sandbox_executor=sandbox_jobs)

    runner.start()
    wait_for(lambda: runs.running == 2 and sandbox_jobs.running == 1)
    time.sleep(0.3)  # several polls: nothing more is claimed
    statuses = [row(db, j).status for j in queued_runs + queued_sandbox]
    runs.opened.set()
    sandbox_jobs.opened.set()
    wait_for(
        lambda: all(row(db, j).status == "done" for j in queued_runs + queued_sandbox)
    )
    runner.stop()

    assert statuses.count("running") == 3
    assert (runs.most_at_once, sandbox_jobs.most_at_once) == (2, 1)


def test_a_local_enqueue_wakes_the_dispatcher_at_once(services_factory) -> None:
    services = services_factory(dispatch_poll_ms=60_000)
    gate = Gate(services.runtime_db)
    gate.opened.set()
    runner = JobRunner(services, run_executor=gate)
    runner.start()
    time.sleep(0.1)  # the first poll found nothing

    job_id = add_job(services.runtime_db)
    services.events.emit("run_queued", {"run_id": job_id}, run_id=job_id)

    wait_for(lambda: row(services.runtime_db, job_id).status == "done", timeout=3)
    runner.stop()


def test_run_started_names_the_worker(services) -> None:
    gate = Gate(services.runtime_db)
    gate.opened.set()
    job_id = add_job(services.runtime_db)
    runner = JobRunner(services, run_executor=gate, worker="api:h:7")

    runner.dispatch_once()
    wait_for(lambda: row(services.runtime_db, job_id).status == "done")

    started = events_of(services.runtime_db, job_id)[0]
    assert (started["event"], started["data"]) == (
        "run_started",
        {"run_id": job_id, "worker": "api:h:7"},
    )


def test_an_unexpected_exception_fails_the_job_with_reason_error(services) -> None:
    data_dir = str(services.settings.data_path)

    def explode(job_id: str) -> str:
        raise RuntimeError(f"cannot open {data_dir}/builds/x\nsecond line")

    job_id = add_job(services.runtime_db, builds=["b1"])
    runner = JobRunner(services, run_executor=explode)

    runner.dispatch_once()
    wait_for(lambda: finished(services.runtime_db, job_id))

    assert row(services.runtime_db, job_id).error == (
        "RuntimeError: cannot open <data>/builds/x"
    )
    events = events_of(services.runtime_db, job_id)
    assert [e["event"] for e in events] == [
        "run_started",
        "internal_error",
        "run_failed",
        "run_finished",
    ]
    assert events[2]["data"] == {
        "run_id": job_id,
        "reason": "error",
        "error": "RuntimeError: cannot open <data>/builds/x",
        "stuck_cards": [],
    }
    summary = events[3]["data"]
    assert (summary["status"], summary["cards"], summary["turns"]) == (
        "failed",
        {},
        0,
    )
    assert data_dir not in str(events)


def test_a_sandbox_job_ends_with_run_finished(services) -> None:
    job_id = add_job(services.runtime_db, type="sandbox_deploy", target_id="sandbox-a")

    def deploy(session_id: str) -> str:
        set_status(services.runtime_db, session_id, "done")
        return "done"

    runner = JobRunner(services, sandbox_executor=deploy)
    runner.dispatch_once()
    wait_for(lambda: finished(services.runtime_db, job_id))

    names = [e["event"] for e in events_of(services.runtime_db, job_id)]
    assert names == ["run_started", "run_finished"]
    assert events_of(services.runtime_db, job_id)[1]["data"]["status"] == "done"


def test_heartbeat_refreshes_a_running_row_until_it_ends(runtime_db) -> None:
    job_id = add_job(
        runtime_db, status="running", heartbeat_at=utcnow() - timedelta(hours=1)
    )
    before = row(runtime_db, job_id).heartbeat_at

    with Heartbeat(runtime_db, job_id, 0.05):
        wait_for(lambda: row(runtime_db, job_id).heartbeat_at > before)
        set_status(runtime_db, job_id, "done")
        ended_at = row(runtime_db, job_id).heartbeat_at
        time.sleep(0.2)

    assert row(runtime_db, job_id).heartbeat_at == ended_at


# Restart, stale runs and abandoned sandboxes ------------------------------------------


def test_the_restart_sweep_only_touches_rows_of_api_workers(services) -> None:
    db = services.runtime_db
    api_row = add_job(db, status="running", worker_id="api:old-host:12")
    cli_row = add_job(db, status="running", worker_id="cli:old-host:13")
    queued = add_job(db)

    swept = sweep_interrupted(db, services.events)

    assert swept == [api_row]
    assert [row(db, j).status for j in (api_row, cli_row, queued)] == [
        "interrupted",
        "running",
        "queued",
    ]
    assert row(db, api_row).end_time is not None
    events = events_of(db, api_row)
    assert [e["event"] for e in events] == ["run_interrupted", "run_finished"]
    assert events[0]["data"] == {
        "run_id": api_row,
        "previous_worker": "api:old-host:12",
    }
    assert events[1]["data"]["status"] == "interrupted"


def test_stale_runs_of_any_worker_are_interrupted_but_live_ones_kept(services) -> None:
    db = services.runtime_db
    old = utcnow() - timedelta(minutes=10)
    stale_cli = add_job(db, status="running", worker_id="cli:h:1", heartbeat_at=old)
    stale_api = add_job(db, status="running", worker_id="api:h:2", heartbeat_at=old)
    fresh = add_job(db, status="running", worker_id="cli:h:3", heartbeat_at=utcnow())
    ours = add_job(db, status="running", worker_id="api:h:4", heartbeat_at=old)

    interrupted = interrupt_stale_runs(db, services.events, 120, spare=[ours])

    assert sorted(interrupted) == sorted([stale_cli, stale_api])
    assert row(db, fresh).status == "running"
    assert row(db, ours).status == "running"
    assert row(db, stale_cli).error == "Interrupted: no heartbeat for 120 s"


def add_sandbox(db: Database, sandbox_id: str, status: str, age: timedelta) -> None:
    with db.transaction() as session:
        session.add(
            Sandbox(
                id=sandbox_id,
                tech_stack="fastapi-react-postgres",
                status=status,
                compose_project=f"orket-{sandbox_id}",
                api_port=18000,
                frontend_port=18001,
                database_port=18002,
                admin_port=18003,
                created_at=utcnow() - age,
                updated_at=utcnow() - age,
            )
        )


def test_sandboxes_left_mid_change_by_a_dead_job_fail_with_ports_released(
    services,
) -> None:
    db = services.runtime_db
    old = timedelta(minutes=10)
    add_sandbox(db, "sandbox-dead-deploy", "creating", old)
    add_sandbox(db, "sandbox-dead-stop", "stopping", old)
    add_sandbox(db, "sandbox-busy", "stopping", old)
    add_sandbox(db, "sandbox-just-made", "creating", timedelta())
    add_sandbox(db, "sandbox-fine", "running", old)
    add_job(db, type="sandbox_stop", target_id="sandbox-busy")

    failed = fail_abandoned_sandboxes(db, services.events, 120)

    assert sorted(failed) == ["sandbox-dead-deploy", "sandbox-dead-stop"]
    with db.reader() as session:
        rows = {s.id: s for s in session.scalars(select(Sandbox))}
    dead = rows["sandbox-dead-deploy"]
    assert dead.status == "failed" and dead.last_error
    ports = (dead.api_port, dead.frontend_port, dead.database_port, dead.admin_port)
    assert ports == (None, None, None, None)
    assert rows["sandbox-busy"].status == "stopping"
    assert rows["sandbox-just-made"].status == "creating"
    assert rows["sandbox-fine"].status == "running"
    names = [e["event"] for e in events_of(db)]
    assert sorted(names) == ["sandbox_delete_failed", "sandbox_deploy_failed"]


def test_a_failing_housekeeping_task_does_not_stop_the_others(services) -> None:
    done = []
    keeper = Housekeeper(services, running_jobs=list)

    def boom() -> None:
        raise RuntimeError("task failed")

    keeper.tasks[0].action = boom
    for task in keeper.tasks[1:]:
        task.action = lambda name=task.name: done.append(name)

    keeper.run_due(time.monotonic())
    keeper.run_due(time.monotonic())  # nothing is due again yet

    assert done == ["abandoned sandboxes", "sandbox health", "event pruning"]


# Shutdown -------------------------------------------------------------------------


def test_shutdown_halts_runs_that_listen_and_interrupts_the_rest(
    services_factory,
) -> None:
    services = services_factory(shutdown_wait_sec=0.5, max_runs=2)
    db = services.runtime_db
    listening = add_job(db, age=timedelta(seconds=2))
    deaf = add_job(db, age=timedelta(seconds=1))
    deaf_gate = Gate(db)

    def executor(job_id: str) -> str:
        if job_id == deaf:
            return deaf_gate(job_id)
        while not row(db, job_id).halt_requested:
            time.sleep(0.02)
        set_status(db, job_id, "halted")
        return "halted"

    runner = JobRunner(services, run_executor=executor)
    runner.dispatch_once()
    wait_for(lambda: deaf_gate.running == 1)

    runner.stop()

    assert row(db, listening).status == "halted"
    assert row(db, deaf).status == "interrupted"
    assert [e["event"] for e in events_of(db, deaf)][-2:] == [
        "run_interrupted",
        "run_finished",
    ]
    assert runner.dispatch_once() == []  # claims nothing after shutdown
    deaf_gate.opened.set()


# A real server killed mid-run -------------------------------------------------------

TEAM = {
    "name": "k_team",
    "seats": {
        "builder": {"name": "Builder", "roles": ["coder"]},
        "verifier": {"name": "Verifier", "roles": ["integrity_guard"]},
    },
}


def write_slow_epic(settings: Any) -> None:
    """Two chained cards; every scripted reply takes 400 ms."""
    import json

    def write(category: str, name: str, data: Any) -> None:
        folder = settings.config_path / category
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")

    def work(path: str) -> list[Any]:
        return [
            [
                {"tool": "write_file", "args": {"path": path, "content": "x\n"}},
                {"tool": "update_issue_status", "args": {"status": "code_review"}},
            ]
        ]

    write("teams", "k_team", TEAM)
    write("environments", "k_env", {"provider": "scripted", "model": "scripted:k"})
    write(
        "scripts",
        "k",
        {
            "schema": "orket-script/1",
            "delay_ms": 400,
            "on_exhausted": "repeat_last",
            "replies": {
                "K-1/coder": work("agent_output/one.txt"),
                "K-2/coder": work("agent_output/two.txt"),
                "integrity_guard": [
                    {"tool": "update_issue_status", "args": {"status": "done"}}
                ],
            },
        },
    )
    write(
        "epics",
        "k_epic",
        {
            "name": "Killed epic",
            "description": "Two cards, one after the other.",
            "team": "k_team",
            "environment": "k_env",
            "issues": [
                {"id": "K-1", "summary": "First file", "seat": "builder"},
                {
                    "id": "K-2",
                    "summary": "Second file",
                    "seat": "builder",
                    "depends_on": ["K-1"],
                },
            ],
        },
    )


def card_status(db: Database, card_id: str) -> str | None:
    with db.reader() as session:
        return session.scalar(select(Issue.status).where(Issue.id == card_id))


def run_active(server: Any) -> str:
    response = requests.post(
        server.url + "/v1/system/run-active",
        json={"path": "model/core/epics/k_epic.json"},
        headers={"X-API-Key": API_KEY},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["session_id"]


@pytest.mark.slow
def test_a_run_killed_with_its_server_is_interrupted_and_rerunning_finishes_it(
    live_server, settings_factory, runtime_db
) -> None:
    settings = settings_factory(dispatch_poll_ms=50, event_poll_ms=50)
    write_slow_epic(settings)
    server = live_server("api", settings)
    first_line = settings.log_file.read_text(encoding="utf-8").splitlines()[0]

    first = run_active(server)
    wait_for(lambda: card_status(runtime_db, "K-1") == "done", timeout=60)
    wait_for(lambda: card_status(runtime_db, "K-2") == "in_progress", timeout=30)
    server.kill()
    killed = row(runtime_db, first)
    assert killed.status == "running" and killed.worker_id.startswith("api:")

    restarted = live_server("api", settings)
    swept = row(runtime_db, first)
    second = run_active(restarted)
    wait_for(lambda: row(runtime_db, second).status not in ("queued", "running"), 60)

    assert swept.status == "interrupted"
    assert [e["event"] for e in events_of(runtime_db, first)][-2:] == [
        "run_interrupted",
        "run_finished",
    ]
    assert row(runtime_db, second).status == "done"
    assert (card_status(runtime_db, "K-1"), card_status(runtime_db, "K-2")) == (
        "done",
        "done",
    )
    second_turns = [
        e["data"]["issue_id"]
        for e in events_of(runtime_db, second)
        if e["event"] == "turn_start"
    ]
    assert "K-1" not in second_turns and "K-2" in second_turns  # resumed, not redone
    log_text = settings.log_file.read_text(encoding="utf-8")
    assert log_text.startswith(first_line)  # runs never truncate the log file


@pytest.mark.slow
def test_stopping_the_server_halts_a_running_run(
    live_server, settings_factory, runtime_db
) -> None:
    settings = settings_factory(dispatch_poll_ms=50, event_poll_ms=50)
    write_slow_epic(settings)
    server = live_server("api", settings)
    run_id = run_active(server)
    wait_for(lambda: card_status(runtime_db, "K-1") == "in_progress", timeout=30)

    assert server.stop() == 0

    stopped = row(runtime_db, run_id)
    assert (stopped.status, stopped.halt_requested) == ("halted", True)
    names = [e["event"] for e in events_of(runtime_db, run_id)]
    assert names[-2:] == ["run_halted", "run_finished"]
    assert "run_interrupted" not in names
