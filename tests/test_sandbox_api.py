"""`/v1/sandboxes` routes (API-4, SBX-2, SBX-5) over a stand-in `docker`."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.models.runtime import Sandbox
from app.models.runtime import Session as RunRow
from app.sandbox import health
from app.services import Services, build_services
from tests.test_sandbox_fakes import (
    MERGE_SHA,
    SANDBOX_ID,
    FakeTools,
    env_secrets,
    free_port_block,
    install_fake_tools,
    run_job,
    sandbox_row,
    sandbox_settings,
)


@pytest.fixture
def port_range() -> tuple[int, int]:
    return free_port_block(12)


@pytest.fixture
def settings(settings_factory, port_range) -> Settings:
    return settings_factory(**sandbox_settings(port_range))


@pytest.fixture
def tools(tmp_path, monkeypatch) -> FakeTools:
    fake = install_fake_tools(tmp_path / "fake", monkeypatch)
    fake.behave(head=MERGE_SHA)
    return fake


@pytest.fixture
def services(app) -> Services:
    return app.extensions["orket"]


@pytest.fixture
def deployed(services, tools) -> Services:
    status, _ = run_job(services, "sandbox_deploy")
    assert status == "done"
    tools.clear_calls()
    return services


# Listing -------------------------------------------------------------------------


def test_a_deployed_sandbox_is_listed_with_urls_and_no_secrets(
    client, auth_headers, deployed, port_range
) -> None:
    response = client.get("/v1/sandboxes", headers=auth_headers)

    low, _ = port_range
    body = response.get_json()
    assert response.status_code == 200
    assert len(body) == 1
    listed = body[0]
    assert set(listed) == {
        "id",
        "rock_id",
        "project_name",
        "tech_stack",
        "status",
        "ports",
        "compose_project",
        "api_url",
        "frontend_url",
        "admin_url",
        "database_url",
        "created_at",
        "deployed_at",
        "deleted_at",
        "last_error",
        "health_checks_passed",
        "health_checks_failed",
    }
    assert listed["id"] == SANDBOX_ID
    assert listed["status"] == "running"
    assert listed["project_name"] == "widgets"
    assert listed["ports"] == {
        "api": low,
        "frontend": low + 1,
        "database": low + 2,
        "admin_tool": low + 3,
    }
    assert listed["api_url"] == f"http://sbx.test:{low}"
    assert listed["admin_url"] == f"http://sbx.test:{low + 3}"
    assert listed["database_url"] == f"postgresql://orket:***@sbx.test:{low + 2}/app"
    assert listed["compose_project"] == f"orket-{SANDBOX_ID}"
    assert listed["created_at"].endswith("+00:00")


def test_the_listing_carries_no_password_env_file_or_host_path(
    client, auth_headers, deployed
) -> None:
    text = client.get("/v1/sandboxes?all=true", headers=auth_headers).get_data(
        as_text=True
    )

    for secret in env_secrets(deployed).values():
        assert secret not in text
    assert str(deployed.settings.data_path) not in text
    assert ".env" not in text
    assert "work_dir" not in text


def test_deleted_sandboxes_are_listed_only_with_all(
    client, auth_headers, deployed
) -> None:
    run_job(deployed, "sandbox_stop")

    default = client.get("/v1/sandboxes", headers=auth_headers).get_json()
    everything = client.get("/v1/sandboxes?all=true", headers=auth_headers).get_json()

    assert default == []
    assert [item["status"] for item in everything] == ["deleted"]
    assert everything[0]["ports"] == {
        "api": None,
        "frontend": None,
        "database": None,
        "admin_tool": None,
    }
    assert everything[0]["deleted_at"] is not None


def test_a_bad_all_flag_is_a_422(client, auth_headers) -> None:
    response = client.get("/v1/sandboxes?all=maybe", headers=auth_headers)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", "all"]


def test_sandboxes_written_by_another_process_are_listed(
    client, auth_headers, settings, tools
) -> None:
    # The webhook process and earlier API processes have their own engines and
    # sessions: the table alone is the registry.
    other = build_services(settings, "webhook")
    try:
        run_job(other, "sandbox_deploy")
    finally:
        other.stop()

    body = client.get("/v1/sandboxes", headers=auth_headers).get_json()

    assert [item["id"] for item in body] == [SANDBOX_ID]
    assert body[0]["status"] == "running"


def test_a_failed_sandbox_shows_its_error(
    client, auth_headers, services, tools
) -> None:
    tools.behave(daemon=False)
    run_job(services, "sandbox_deploy")

    listed = client.get("/v1/sandboxes", headers=auth_headers).get_json()[0]

    assert listed["status"] == "failed"
    assert listed["last_error"] == "docker engine not available"
    assert listed["api_url"] is None
    assert listed["database_url"] is None


def test_sandbox_routes_need_the_key(client) -> None:
    assert client.get("/v1/sandboxes").status_code == 401
    assert client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop").status_code == 401
    assert client.get(f"/v1/sandboxes/{SANDBOX_ID}/logs").status_code == 401


# Stop ----------------------------------------------------------------------------


def test_stop_queues_a_job_and_answers_202(client, auth_headers, deployed) -> None:
    response = client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers)

    body = response.get_json()
    assert response.status_code == 202
    assert body == {"ok": True, "job_id": body["job_id"], "status": "queued"}
    with deployed.runtime_db.reader() as session:
        job = session.get(RunRow, body["job_id"])
        assert (job.type, job.status, job.target_id, job.source) == (
            "sandbox_stop",
            "queued",
            SANDBOX_ID,
            "api",
        )


def test_a_stop_job_from_the_route_frees_the_ports(
    client, auth_headers, deployed, tools
) -> None:
    from app.sandbox import execute_sandbox_job

    job_id = client.post(
        f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers
    ).get_json()["job_id"]

    assert execute_sandbox_job(deployed, job_id) == "done"
    row = sandbox_row(deployed)
    assert row.status == "deleted"
    assert row.api_port is None
    assert len(tools.compose_calls("down")) == 1


def test_stopping_an_unknown_sandbox_is_404(client, auth_headers) -> None:
    response = client.post("/v1/sandboxes/sandbox-nope/stop", headers=auth_headers)

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Not Found"}


@pytest.mark.parametrize("status", ["deleted", "failed", "stopping", "stopped"])
def test_stopping_a_sandbox_that_is_not_running_is_409(
    client, auth_headers, deployed, status
) -> None:
    with deployed.runtime_db.transaction() as session:
        session.get(Sandbox, SANDBOX_ID).status = status

    response = client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers)

    assert response.status_code == 409
    assert response.get_json() == {"detail": "Sandbox is not running"}


@pytest.mark.parametrize("status", ["unhealthy", "creating"])
def test_unhealthy_and_creating_sandboxes_can_be_stopped(
    client, auth_headers, deployed, status
) -> None:
    with deployed.runtime_db.transaction() as session:
        session.get(Sandbox, SANDBOX_ID).status = status

    response = client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers)

    assert response.status_code == 202


def test_a_second_stop_while_one_is_queued_is_409(
    client, auth_headers, deployed
) -> None:
    first = client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers)
    second = client.post(f"/v1/sandboxes/{SANDBOX_ID}/stop", headers=auth_headers)

    assert first.status_code == 202
    assert second.status_code == 409
    assert second.get_json() == {
        "detail": (
            f"Sandbox {SANDBOX_ID} already has an active job "
            f"{first.get_json()['job_id']}"
        )
    }


# Logs ----------------------------------------------------------------------------


def test_logs_return_the_tail_of_every_service(
    client, auth_headers, deployed, tools
) -> None:
    response = client.get(f"/v1/sandboxes/{SANDBOX_ID}/logs", headers=auth_headers)

    logs = response.get_json()["logs"]
    assert response.status_code == 200
    assert "api-1  | started api" in logs
    assert "pgadmin-1  | started pgadmin" in logs
    assert tools.compose_calls("logs")[0][-3:] == ["logs", "--no-color", "--tail=100"]


def test_logs_of_one_service(client, auth_headers, deployed, tools) -> None:
    response = client.get(
        f"/v1/sandboxes/{SANDBOX_ID}/logs?service=db", headers=auth_headers
    )

    assert response.status_code == 200
    assert response.get_json() == {"logs": "db-1  | started db with password \n"}
    assert tools.compose_calls("logs")[0][-4:] == [
        "logs",
        "--no-color",
        "--tail=100",
        "db",
    ]


def test_logs_hide_the_sandbox_passwords(client, auth_headers, deployed, tools) -> None:
    password = env_secrets(deployed)["POSTGRES_PASSWORD"]
    tools.behave(leak=password)

    logs = client.get(
        f"/v1/sandboxes/{SANDBOX_ID}/logs?service=api", headers=auth_headers
    ).get_json()["logs"]

    assert password not in logs
    assert "with password ***" in logs


def test_logs_of_an_unknown_sandbox_are_404(client, auth_headers, tools) -> None:
    response = client.get("/v1/sandboxes/sandbox-nope/logs", headers=auth_headers)

    assert response.status_code == 404
    assert tools.calls() == []


def test_logs_of_an_unknown_service_are_422(
    client, auth_headers, deployed, tools
) -> None:
    response = client.get(
        f"/v1/sandboxes/{SANDBOX_ID}/logs?service=redis", headers=auth_headers
    )

    assert response.status_code == 422
    assert response.get_json() == {
        "detail": [
            {
                "loc": ["query", "service"],
                "msg": "Unknown service redis; expected one of api, frontend, db, "
                "pgadmin",
                "type": "value_error",
            }
        ]
    }
    assert tools.calls() == []


def test_logs_without_a_docker_binary_are_503(
    client, auth_headers, deployed, tools
) -> None:
    tools.remove_docker()

    response = client.get(f"/v1/sandboxes/{SANDBOX_ID}/logs", headers=auth_headers)

    assert response.status_code == 503
    assert response.get_json() == {"detail": "docker engine not available"}


def test_logs_without_a_daemon_are_503(client, auth_headers, deployed, tools) -> None:
    tools.behave(daemon=False)

    response = client.get(f"/v1/sandboxes/{SANDBOX_ID}/logs", headers=auth_headers)

    assert response.status_code == 503
    assert response.get_json() == {"detail": "docker engine not available"}


@pytest.fixture
def short_logs_deadline(monkeypatch) -> None:
    monkeypatch.setattr(health, "LOGS_TIMEOUT_SEC", 0.5)


def test_logs_that_take_too_long_are_504(
    client, auth_headers, deployed, tools, short_logs_deadline
) -> None:
    tools.behave(logs={"sleep": 5})

    response = client.get(f"/v1/sandboxes/{SANDBOX_ID}/logs", headers=auth_headers)

    assert response.status_code == 504
    assert response.get_json() == {"detail": "Sandbox logs timed out"}
