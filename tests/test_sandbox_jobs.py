"""Sandbox deploy and stop jobs with stand-in `docker` and `git` (SBX-3, SBX-4)."""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from app.models.runtime import Session as RunRow
from app.models.webhook import BugFixPhase, GiteaOutbox
from app.sandbox import SandboxJobConflict, enqueue_sandbox_job, execute_sandbox_job
from app.services import Services, build_services
from tests.test_sandbox_fakes import (
    DEPLOY_PARAMS,
    GITEA_TOKEN,
    MERGE_SHA,
    SANDBOX_ID,
    FakeTools,
    env_secrets,
    events_named,
    free_port_block,
    install_fake_tools,
    run_job,
    sandbox_row,
    sandbox_settings,
)

PROJECT = f"orket-{SANDBOX_ID}"


@pytest.fixture
def tools(tmp_path, monkeypatch) -> FakeTools:
    fake = install_fake_tools(tmp_path / "fake", monkeypatch)
    fake.behave(head=MERGE_SHA)
    return fake


@pytest.fixture
def port_range() -> tuple[int, int]:
    return free_port_block(12)


@pytest.fixture
def make_services(settings_factory, port_range) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def build(**overrides: Any) -> Services:
        settings = settings_factory(**sandbox_settings(port_range, **overrides))
        services = build_services(settings, "api")
        built.append(services)
        return services

    yield build
    for services in built:
        services.stop()


@pytest.fixture
def services(make_services) -> Services:
    return make_services()


def run_row(services: Services, job_id: str) -> RunRow:
    with services.runtime_db.reader() as session:
        row = session.get(RunRow, job_id)
        assert row is not None
        return row


def ports_of(row: Any) -> list[int | None]:
    return [row.api_port, row.frontend_port, row.database_port, row.admin_port]


# Deploy --------------------------------------------------------------------------


def test_merged_pr_deploys_a_running_sandbox_with_ports_in_range(
    services, tools, port_range
) -> None:
    status, job_id = run_job(services, "sandbox_deploy")

    row = sandbox_row(services)
    low, _ = port_range
    assert status == "done"
    assert run_row(services, job_id).status == "done"
    assert run_row(services, job_id).end_time is not None
    assert row.status == "running"
    assert ports_of(row) == [low, low + 1, low + 2, low + 3]
    assert row.compose_project == PROJECT
    assert row.deployed_at is not None
    assert row.last_error is None
    assert (row.rock_id, row.repo_full_name, row.pr_number) == (
        "widgets-pr7",
        "acme/widgets",
        7,
    )
    assert row.source_ref == MERGE_SHA
    assert len(json.loads(row.container_ids_json)) == 4


def test_deploy_runs_compose_up_in_the_sandbox_directory(services, tools) -> None:
    run_job(services, "sandbox_deploy")

    work_dir = services.settings.sandboxes_root / SANDBOX_ID
    compose_file = work_dir / "docker-compose.yml"
    ups = [c for c in tools.calls("docker") if "up" in c["argv"]]
    assert [c["argv"] for c in ups] == [
        ["compose", "-p", PROJECT, "-f", str(compose_file), "up", "-d", "--build"]
    ]
    assert ups[0]["cwd"] == str(work_dir)
    assert tools.calls("docker")[0]["argv"][:1] == ["info"]


def test_deploy_emits_create_and_deployed_events(services, tools, port_range) -> None:
    _, job_id = run_job(services, "sandbox_deploy")

    low, _ = port_range
    created = events_named(services, "sandbox_create")
    deployed = events_named(services, "sandbox_deployed")
    assert created == [
        {
            "sandbox_id": SANDBOX_ID,
            "rock_id": "widgets-pr7",
            "tech_stack": "fastapi-react-postgres",
            "ports": {
                "api": low,
                "frontend": low + 1,
                "database": low + 2,
                "admin": low + 3,
            },
        }
    ]
    assert deployed == [
        {
            "sandbox_id": SANDBOX_ID,
            "api_url": f"http://sbx.test:{low}",
            "frontend_url": f"http://sbx.test:{low + 1}",
        }
    ]
    assert events_named(services, "run_queued")[0]["run_id"] == job_id


def test_passwords_live_only_in_a_private_env_file(services, tools) -> None:
    run_job(services, "sandbox_deploy")

    work_dir = services.settings.sandboxes_root / SANDBOX_ID
    env_file = work_dir / ".env"
    compose_text = (work_dir / "docker-compose.yml").read_text()
    secrets = env_secrets(services)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert set(secrets) == {"POSTGRES_PASSWORD", "PGADMIN_PASSWORD"}
    assert all(len(value) >= 40 for value in secrets.values())
    assert all(value not in compose_text for value in secrets.values())
    assert "${POSTGRES_PASSWORD}" in compose_text
    assert not compose_text.startswith("version")
    assert (work_dir / "src" / "backend" / "Dockerfile").exists()


def test_passwords_never_reach_events_or_the_log_file(services, tools) -> None:
    run_job(services, "sandbox_deploy")
    secrets = env_secrets(services).values()
    tools.behave(down={"exit": 1, "stderr": "boom " + " ".join(secrets)})
    run_job(services, "sandbox_stop")

    stored = json.dumps(
        [
            events_named(services, name)
            for name in ("sandbox_deployed", "sandbox_create")
        ]
        + [events_named(services, "sandbox_delete_failed")]
    )
    log_text = services.settings.log_file.read_text()
    assert events_named(services, "sandbox_delete_failed")
    for secret in [*secrets, GITEA_TOKEN]:
        assert secret not in stored
        assert secret not in log_text
        assert secret not in (sandbox_row(services).last_error or "")


def test_clone_sends_the_token_as_a_header_never_in_the_url(services, tools) -> None:
    run_job(services, "sandbox_deploy")

    clone = next(c for c in tools.calls("git") if "clone" in c["argv"])
    assert clone["argv"] == [
        "-c",
        f"http.extraHeader=Authorization: token {GITEA_TOKEN}",
        "clone",
        "--depth",
        "1",
        "--",
        DEPLOY_PARAMS["clone_url"],
        "src",
    ]
    assert clone["cwd"] == str(services.settings.sandboxes_root / SANDBOX_ID)
    assert all(GITEA_TOKEN not in c["argv"][-2] for c in tools.calls("git"))


def test_the_token_is_never_sent_to_another_host(services, tools) -> None:
    run_job(services, "sandbox_deploy", clone_url="http://elsewhere.test/acme/w.git")

    clone = next(c for c in tools.calls("git") if "clone" in c["argv"])
    assert clone["argv"][0] == "clone"
    assert GITEA_TOKEN not in json.dumps(clone["argv"])


def test_basic_auth_header_without_a_token(make_services, tools) -> None:
    services = make_services(gitea_token=None, gitea_admin_password="pw-secret-1")

    run_job(services, "sandbox_deploy")

    clone = next(c for c in tools.calls("git") if "clone" in c["argv"])
    assert clone["argv"][1].startswith("http.extraHeader=Authorization: Basic ")
    assert "pw-secret-1" not in json.dumps(clone["argv"])


def test_a_clone_url_that_is_not_http_is_refused(services, tools) -> None:
    status, _ = run_job(
        services, "sandbox_deploy", clone_url="ext::sh -c touch% /tmp/x"
    )

    assert status == "failed"
    assert sandbox_row(services).last_error == "Clone URL must use http or https"
    assert tools.calls("git") == []


def test_the_merge_commit_is_fetched_when_the_branch_moved_on(services, tools) -> None:
    tools.behave(head="1" * 40)

    run_job(services, "sandbox_deploy")

    git = [c["argv"] for c in tools.calls("git")]
    assert any(argv[-4:] == ["--depth", "1", "origin", MERGE_SHA] for argv in git)
    assert ["-C", "src", "checkout", "--detach", "FETCH_HEAD"] in git
    assert sandbox_row(services).status == "running"


def test_an_unknown_merge_commit_fails_the_deploy(services, tools) -> None:
    tools.behave(head="1" * 40, fetch={"exit": 128, "stderr": "fatal: not our ref"})

    status, _ = run_job(services, "sandbox_deploy")

    assert status == "failed"
    assert sandbox_row(services).last_error == f"Merge commit {MERGE_SHA} not found"
    assert ports_of(sandbox_row(services)) == [None] * 4


def test_commands_get_only_path_home_lang_and_docker_variables(
    services, tools, monkeypatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/fake-docker.sock")
    monkeypatch.setenv("GITEA_TOKEN", "leaked-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-key")
    monkeypatch.setenv("ORKET_API_KEY", "leaked-api-key")

    run_job(services, "sandbox_deploy")

    calls = tools.calls()
    assert {c["tool"] for c in calls} == {"docker", "git"}
    for call in calls:
        # Python itself may add LC_CTYPE when it coerces a C locale.
        names = set(call["env"]) - {"LC_CTYPE"}
        assert names == {"PATH", "HOME", "LANG", "DOCKER_HOST"}
        assert call["env"]["DOCKER_HOST"] == "unix:///tmp/fake-docker.sock"


def test_the_sandbox_comment_is_owed_to_the_pr_through_the_outbox(
    services, tools, port_range
) -> None:
    with services.webhook_db.transaction() as session:
        session.add(
            BugFixPhase(
                rock_id="widgets-pr7",
                data_json=json.dumps({"scheduled_end": "2026-03-09T10:00:00+00:00"}),
                status="active",
            )
        )

    run_job(services, "sandbox_deploy")

    with services.webhook_db.reader() as session:
        rows = session.scalars(select(GiteaOutbox)).all()
    assert len(rows) == 1
    row = rows[0]
    body = json.loads(row.body)["body"]
    low, _ = port_range
    assert (row.kind, row.method, row.status) == ("comment", "POST", "pending")
    assert row.dedupe_key == f"sandbox:{SANDBOX_ID}"
    assert row.path == "/api/v1/repos/acme/widgets/issues/7/comments"
    assert body.endswith(f"<!-- orket:sandbox:{SANDBOX_ID} -->")
    assert f"http://sbx.test:{low}" in body
    assert f"http://sbx.test:{low + 1}" in body
    assert "fastapi-react-postgres" in body
    assert "2026-03-09T10:00:00+00:00" in body
    assert all(secret not in body for secret in env_secrets(services).values())


def test_a_sandbox_without_a_pr_owes_no_comment(services, tools) -> None:
    run_job(services, "sandbox_deploy", repo_full_name=None, pr_number=None)

    with services.webhook_db.reader() as session:
        assert session.scalars(select(GiteaOutbox)).all() == []
    assert sandbox_row(services).status == "running"


@pytest.mark.parametrize("form", ["lines", "array"])
def test_containers_are_recorded_from_both_ps_output_forms(
    services, tools, form
) -> None:
    tools.behave(ps_form=form)

    run_job(services, "sandbox_deploy")

    ids = json.loads(sandbox_row(services).container_ids_json)
    assert ids == [f"c{n:011d}" for n in range(4)]
    assert tools.compose_calls("ps")[0][-3:] == ["ps", "--format", "json"]


def test_compose_v1_is_used_only_when_docker_compose_is_missing(
    services, tools
) -> None:
    tools.add_compose_v1()

    status, _ = run_job(services, "sandbox_deploy")

    ups = tools.compose_calls("up")
    assert status == "done"
    assert [argv[0] for argv in ups] == ["docker-compose"]
    assert ups[0][1:] == [
        "-p",
        PROJECT,
        "-f",
        str(services.settings.sandboxes_root / SANDBOX_ID / "docker-compose.yml"),
        "up",
        "-d",
        "--build",
    ]


def test_compose_v2_is_preferred_when_both_exist(services, tools) -> None:
    tools.add_compose_v1()
    tools.behave(compose_v2=True)

    run_job(services, "sandbox_deploy")

    assert [argv[0] for argv in tools.compose_calls("up")] == ["docker"]
    assert tools.calls("docker-compose") == []


def test_an_already_running_sandbox_is_not_deployed_again(services, tools) -> None:
    run_job(services, "sandbox_deploy")
    ports = ports_of(sandbox_row(services))
    tools.clear_calls()

    status, _ = run_job(services, "sandbox_deploy")

    assert status == "done"
    assert tools.calls() == []
    assert ports_of(sandbox_row(services)) == ports


def test_an_ended_job_is_left_alone(services, tools) -> None:
    status, job_id = run_job(services, "sandbox_deploy")
    tools.clear_calls()

    assert execute_sandbox_job(services, job_id) == status
    assert tools.calls() == []


# Failures ------------------------------------------------------------------------


def test_without_a_docker_binary_the_deploy_fails_clearly(services, tools) -> None:
    tools.remove_docker()

    status, job_id = run_job(services, "sandbox_deploy")

    row = sandbox_row(services)
    assert status == "failed"
    assert row.status == "failed"
    assert row.last_error == "docker engine not available"
    assert ports_of(row) == [None] * 4
    assert run_row(services, job_id).error == "docker engine not available"
    assert events_named(services, "sandbox_deploy_failed") == [
        {"sandbox_id": SANDBOX_ID, "error": "docker engine not available"}
    ]
    assert tools.calls("git") == []


def test_without_a_daemon_the_deploy_fails_with_the_same_message(
    services, tools
) -> None:
    tools.behave(daemon=False)

    status, _ = run_job(services, "sandbox_deploy")

    assert status == "failed"
    assert sandbox_row(services).last_error == "docker engine not available"
    assert tools.compose_calls("up") == []


def test_a_sandbox_without_docker_can_be_deployed_once_docker_is_back(
    services, tools
) -> None:
    tools.remove_docker()
    run_job(services, "sandbox_deploy")
    tools.restore_docker()

    status, _ = run_job(services, "sandbox_deploy")

    row = sandbox_row(services)
    assert status == "done"
    assert row.status == "running"
    assert row.last_error is None
    assert None not in ports_of(row)


def test_a_compose_failure_takes_the_project_down_and_releases_ports(
    services, tools
) -> None:
    work_dir = services.settings.sandboxes_root / SANDBOX_ID
    tools.behave(
        up={"exit": 1, "stderr": f"unable to prepare context: {work_dir}/src/api"}
    )

    status, _ = run_job(services, "sandbox_deploy")

    row = sandbox_row(services)
    assert status == "failed"
    assert row.status == "failed"
    assert row.last_error.startswith("docker compose up failed: ")
    assert str(services.settings.data_path) not in row.last_error
    assert ports_of(row) == [None] * 4
    downs = tools.compose_calls("down")
    assert len(downs) == 1 and "-v" in downs[0]
    assert events_named(services, "sandbox_deploy_failed")[0]["error"] == row.last_error


def test_a_failed_sandbox_can_be_deployed_again(services, tools, port_range) -> None:
    tools.behave(up={"exit": 1, "stderr": "build failed"})
    run_job(services, "sandbox_deploy")
    tools.behave(up={})

    status, _ = run_job(services, "sandbox_deploy")

    row = sandbox_row(services)
    assert status == "done"
    assert row.status == "running"
    assert row.last_error is None
    assert ports_of(row)[0] == port_range[0]


def test_a_deploy_past_the_deadline_fails_and_is_cleaned_up(
    make_services, tools
) -> None:
    services = make_services(sandbox_timeout_sec=1.0)
    tools.behave(up={"sleep": 10})

    started = time.monotonic()
    status, _ = run_job(services, "sandbox_deploy")

    assert time.monotonic() - started < 8
    assert status == "failed"
    assert sandbox_row(services).last_error == "docker compose up timed out after 1 s"
    assert len(tools.compose_calls("down")) == 1
    assert ports_of(sandbox_row(services)) == [None] * 4


@pytest.mark.parametrize("stack", ["node-react-postgres", "django-react-postgres"])
def test_an_unsupported_stack_is_refused_before_anything_is_allocated(
    services, tools, stack
) -> None:
    status, job_id = run_job(services, "sandbox_deploy", tech_stack=stack)

    row = sandbox_row(services)
    assert status == "failed"
    assert row.status == "failed"
    assert row.last_error == f"Unsupported tech stack: {stack}"
    assert run_row(services, job_id).error == f"Unsupported tech stack: {stack}"
    assert ports_of(row) == [None] * 4
    assert tools.calls() == []
    assert not (services.settings.sandboxes_root / SANDBOX_ID).exists()
    assert events_named(services, "sandbox_create") == []


# Ports ---------------------------------------------------------------------------


def test_ports_skip_ports_in_use_and_the_servers_own(
    make_services, tools, port_range
) -> None:
    low, _ = port_range
    services = make_services(port=low, webhook_port=low + 2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", low + 1))
        busy.listen()

        run_job(services, "sandbox_deploy")

    assert ports_of(sandbox_row(services)) == [low + 3, low + 4, low + 5, low + 6]


def test_a_second_sandbox_takes_the_next_free_ports(
    services, tools, port_range
) -> None:
    low, _ = port_range
    run_job(services, "sandbox_deploy")

    run_job(services, "sandbox_deploy", "sandbox-widgets-pr8", pr_number=8)

    second = ports_of(sandbox_row(services, "sandbox-widgets-pr8"))
    assert second == [low + 4, low + 5, low + 6, low + 7]


def test_ports_held_only_by_failed_or_deleted_sandboxes_are_free(
    services, tools, port_range
) -> None:
    low, _ = port_range
    run_job(services, "sandbox_deploy")
    run_job(services, "sandbox_stop")

    run_job(services, "sandbox_deploy", "sandbox-widgets-pr8", pr_number=8)

    assert ports_of(sandbox_row(services, "sandbox-widgets-pr8"))[0] == low


def test_no_free_ports_fails_the_deploy(make_services, tools, port_range) -> None:
    low, _ = port_range
    services = make_services(sandbox_port_range=f"{low}-{low + 2}")

    status, _ = run_job(services, "sandbox_deploy")

    assert status == "failed"
    assert sandbox_row(services).last_error == "No free sandbox ports"
    assert tools.compose_calls("up") == []
    assert tools.calls("git") == []


# Stop ----------------------------------------------------------------------------


def test_stop_brings_the_project_down_and_frees_its_ports(services, tools) -> None:
    run_job(services, "sandbox_deploy")
    tools.clear_calls()

    status, job_id = run_job(services, "sandbox_stop")

    row = sandbox_row(services)
    work_dir = services.settings.sandboxes_root / SANDBOX_ID
    assert status == "done"
    assert run_row(services, job_id).status == "done"
    assert row.status == "deleted"
    assert row.deleted_at is not None
    assert ports_of(row) == [None] * 4
    assert tools.compose_calls("down") == [
        [
            "docker",
            "compose",
            "-p",
            PROJECT,
            "-f",
            str(work_dir / "docker-compose.yml"),
            "down",
            "-v",
            "--remove-orphans",
        ]
    ]
    assert not work_dir.exists()
    assert events_named(services, "sandbox_deleted") == [{"sandbox_id": SANDBOX_ID}]


def test_a_failed_stop_puts_the_previous_status_back(services, tools) -> None:
    run_job(services, "sandbox_deploy")
    ports = ports_of(sandbox_row(services))
    tools.behave(down={"exit": 1, "stderr": "Error response from daemon: conflict"})

    status, _ = run_job(services, "sandbox_stop")

    row = sandbox_row(services)
    assert status == "failed"
    assert row.status == "running"
    assert row.last_error == (
        "docker compose down failed: Error response from daemon: conflict"
    )
    assert ports_of(row) == ports
    assert events_named(services, "sandbox_delete_failed") == [
        {"sandbox_id": SANDBOX_ID, "error": row.last_error}
    ]


def test_a_stop_without_docker_keeps_the_sandbox(services, tools) -> None:
    run_job(services, "sandbox_deploy")
    tools.behave(daemon=False)

    status, _ = run_job(services, "sandbox_stop")

    assert status == "failed"
    assert sandbox_row(services).status == "running"
    assert sandbox_row(services).last_error == "docker engine not available"


def test_stopping_a_sandbox_that_is_not_running_does_nothing(services, tools) -> None:
    tools.behave(up={"exit": 1})
    run_job(services, "sandbox_deploy")
    tools.clear_calls()

    status, _ = run_job(services, "sandbox_stop")

    assert status == "done"
    assert sandbox_row(services).status == "failed"
    assert tools.calls() == []


# The queue -----------------------------------------------------------------------


def test_enqueue_writes_a_queued_session_row(services) -> None:
    job = enqueue_sandbox_job(
        services.runtime_db,
        services.events,
        kind="sandbox_deploy",
        sandbox_id=SANDBOX_ID,
        params=DEPLOY_PARAMS,
        source="webhook",
    )

    row = run_row(services, job["session_id"])
    assert job == {"session_id": row.id, "status": "queued", "sandbox_id": SANDBOX_ID}
    assert len(row.id) == 8
    assert (row.type, row.status, row.target_id, row.source) == (
        "sandbox_deploy",
        "queued",
        SANDBOX_ID,
        "webhook",
    )
    assert json.loads(row.params_json) == DEPLOY_PARAMS
    assert events_named(services, "run_queued") == [
        {
            "run_id": row.id,
            "type": "sandbox_deploy",
            "target": SANDBOX_ID,
            "build_id": None,
            "builds": [],
            "source": "webhook",
        }
    ]


def test_sandbox_jobs_conflict_on_the_sandbox_id(services, tools) -> None:
    def enqueue(kind: str, sandbox_id: str = SANDBOX_ID) -> dict[str, Any]:
        return enqueue_sandbox_job(
            services.runtime_db,
            services.events,
            kind=kind,
            sandbox_id=sandbox_id,
            params=DEPLOY_PARAMS,
            source="api",
        )

    first = enqueue("sandbox_deploy")
    with pytest.raises(SandboxJobConflict) as conflict:
        enqueue("sandbox_stop")
    other = enqueue("sandbox_deploy", "sandbox-widgets-pr8")
    execute_sandbox_job(services, first["session_id"])
    after = enqueue("sandbox_stop")

    assert conflict.value.job_id == first["session_id"]
    assert conflict.value.detail == (
        f"Sandbox {SANDBOX_ID} already has an active job {first['session_id']}"
    )
    assert other["status"] == after["status"] == "queued"


@pytest.mark.parametrize(
    ("kind", "sandbox_id"),
    [("epic", SANDBOX_ID), ("sandbox_deploy", "../etc"), ("sandbox_stop", "x")],
)
def test_enqueue_refuses_other_job_types_and_foreign_ids(
    services, kind, sandbox_id
) -> None:
    with pytest.raises(ValueError):
        enqueue_sandbox_job(
            services.runtime_db,
            services.events,
            kind=kind,
            sandbox_id=sandbox_id,
            params={},
            source="api",
        )
