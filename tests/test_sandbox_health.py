"""Periodic sandbox health checks (SPEC SBX-5) against a stand-in `docker`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.models.runtime import Sandbox
from app.sandbox import check_sandbox_health
from app.services import Services, build_services
from tests.test_sandbox_fakes import (
    MERGE_SHA,
    SANDBOX_ID,
    FakeTools,
    free_port_block,
    install_fake_tools,
    run_job,
    sandbox_row,
    sandbox_settings,
)


@pytest.fixture
def tools(tmp_path, monkeypatch) -> FakeTools:
    fake = install_fake_tools(tmp_path / "fake", monkeypatch)
    fake.behave(head=MERGE_SHA)
    return fake


@pytest.fixture
def services(settings_factory) -> Iterator[Services]:
    built = build_services(
        settings_factory(**sandbox_settings(free_port_block(8))), "api"
    )
    yield built
    built.stop()


@pytest.fixture
def deployed(services, tools) -> Services:
    status, _ = run_job(services, "sandbox_deploy")
    assert status == "done"
    tools.clear_calls()
    return services


def counts(services: Services) -> tuple[str, int, int]:
    row = sandbox_row(services)
    return row.status, row.health_checks_passed, row.health_checks_failed


@pytest.mark.parametrize("form", ["lines", "array"])
def test_all_services_running_passes(deployed, tools, form) -> None:
    tools.behave(ps_form=form)

    outcome = check_sandbox_health(deployed)

    assert outcome == {SANDBOX_ID: "passed"}
    assert counts(deployed) == ("running", 1, 0)
    assert sandbox_row(deployed).last_health_check is not None
    assert tools.compose_calls("ps")[0][-3:] == ["ps", "--format", "json"]


@pytest.mark.parametrize(
    "problem",
    [
        {"states": {"db": "exited"}},
        {"states": {"pgadmin": "absent"}},
        {"health": {"api": "unhealthy"}},
    ],
)
def test_a_service_that_is_not_running_fails_and_marks_unhealthy(
    deployed, tools, problem
) -> None:
    tools.behave(**problem)

    outcome = check_sandbox_health(deployed)

    assert outcome == {SANDBOX_ID: "failed"}
    assert counts(deployed) == ("unhealthy", 0, 1)


def test_an_unhealthy_sandbox_that_recovers_is_running_again(deployed, tools) -> None:
    tools.behave(states={"api": "restarting"})
    check_sandbox_health(deployed)
    tools.behave(states={})

    outcome = check_sandbox_health(deployed)

    assert outcome == {SANDBOX_ID: "passed"}
    assert counts(deployed) == ("running", 1, 1)


def test_a_missing_engine_counts_as_a_failed_check(deployed, tools) -> None:
    tools.behave(daemon=False)

    check_sandbox_health(deployed)

    assert counts(deployed) == ("unhealthy", 0, 1)


def test_only_running_and_unhealthy_sandboxes_are_checked(deployed, tools) -> None:
    run_job(deployed, "sandbox_stop")
    tools.clear_calls()

    assert check_sandbox_health(deployed) == {}
    assert tools.compose_calls("ps") == []
    assert counts(deployed) == ("deleted", 0, 0)


def test_compose_v1_sandboxes_are_checked_through_docker_inspect(
    services, tools
) -> None:
    tools.add_compose_v1()
    run_job(services, "sandbox_deploy")
    services_by_id = {
        f"c{n:011d}": name
        for n, name in enumerate(["api", "frontend", "db", "pgadmin"])
    }
    tools.behave(
        v1_inspect=[
            {
                "Id": container_id + "0" * 52,
                "State": {"Status": "running"},
                "Config": {"Labels": {"com.docker.compose.service": name}},
            }
            for container_id, name in services_by_id.items()
        ]
    )

    assert check_sandbox_health(services) == {SANDBOX_ID: "passed"}
    inspect = [c["argv"] for c in tools.calls("docker") if c["argv"][0] == "inspect"]
    assert inspect[-1] == ["inspect", *services_by_id]


def test_a_stopping_sandbox_is_not_checked(deployed, tools) -> None:
    with deployed.runtime_db.transaction() as session:
        session.get(Sandbox, SANDBOX_ID).status = "stopping"

    assert check_sandbox_health(deployed) == {}
    assert counts(deployed) == ("stopping", 0, 0)
