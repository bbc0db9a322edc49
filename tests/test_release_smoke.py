"""Pieces of `orket smoke`: Gitea-shaped deliveries, failure handling, Docker skip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from app.cli import smoke
from app.cli.gitea_samples import pull_request_payload, signed_delivery
from app.cli.smoke import ReleaseSmoke, SmokeFailure, stored_revision
from app.migrate import head_revision
from app.webhook.deliveries import normalise, validate_delivery
from app.webhook.signatures import given_signature, verify_signature

SECRET = "smoke-secret"


def payload(kind: str, number: int = 7) -> dict:
    return pull_request_payload(
        kind,
        owner="acme",
        repo="widgets",
        number=number,
        title="Add export",
        review_text="Please add a test.",
    )


@pytest.mark.parametrize(
    ("kind", "event", "reviewer"),
    [
        ("pr_opened", "pr_opened", "alice"),
        ("review_rejected", "review_rejected", "bob"),
        ("review_comment", "review_comment", "bob"),
    ],
)
def test_sample_deliveries_read_as_gitea_deliveries(kind, event, reviewer) -> None:
    delivery = signed_delivery(kind, payload(kind), SECRET)
    headers = Headers(delivery.headers)
    data = json.loads(delivery.body)

    validate_delivery(headers, data)
    normalised = normalise(headers, data)

    assert normalised.event == event
    assert normalised.pr_key == "acme/widgets#7"
    assert normalised.reviewer == reviewer
    assert normalised.card_ref is None
    assert headers["X-Gitea-Delivery"] == delivery.delivery_id


def test_sample_deliveries_are_signed_over_the_exact_bytes() -> None:
    delivery = signed_delivery("review_rejected", payload("review_rejected"), SECRET)
    signature = given_signature(Headers(delivery.headers))

    assert signature is not None
    assert verify_signature((SECRET,), delivery.body, signature)
    assert not verify_signature(("other",), delivery.body, signature)
    assert not verify_signature((SECRET,), delivery.body + b" ", signature)


def test_unsigned_sample_carries_no_signature() -> None:
    delivery = signed_delivery("pr_opened", payload("pr_opened"), None)

    assert given_signature(Headers(delivery.headers)) is None


def test_sample_bodies_are_serialised_like_gitea() -> None:
    data = payload("pr_opened")
    data["pull_request"]["body"] = "stock & reorder <points>"

    body = signed_delivery("pr_opened", data, SECRET).body

    assert body.startswith(b'{\n  "action": "opened",')
    assert not body.endswith(b"\n")
    assert b"stock \\u0026 reorder \\u003cpoints\\u003e" in body
    assert json.loads(body)["pull_request"]["body"] == "stock & reorder <points>"


def test_distinct_pull_requests_give_distinct_bodies() -> None:
    first = signed_delivery("review_rejected", payload("review_rejected", 1), SECRET)
    second = signed_delivery("review_rejected", payload("review_rejected", 2), SECRET)

    assert first.body != second.body
    assert first.delivery_id != second.delivery_id


def test_stored_revision_reads_alembic_version(settings) -> None:
    assert stored_revision(settings.runtime_db_url) == head_revision("runtime")


def test_a_failed_step_stops_the_servers_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = ReleaseSmoke(tmp_path, skip_docker=True)
    stopped = []

    def failing_tests() -> None:
        raise SmokeFailure("pytest exited 1")

    def never_reached() -> None:
        raise AssertionError("steps after a failure must not run")

    monkeypatch.setattr(run, "run_tests", failing_tests)
    monkeypatch.setattr(run, "migrate_fresh", never_reached)
    monkeypatch.setattr(run, "stop_servers", lambda: stopped.append(True) or True)

    assert run.run() == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[release-smoke] RUN: pytest -q"
    assert lines[-2:] == [
        "[release-smoke] RUN: stop servers",
        "[release-smoke] FAILED: pytest -q: pytest exited 1",
    ]
    assert stopped == [True]


def test_every_step_passing_ends_with_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = ReleaseSmoke(tmp_path, skip_docker=True)
    for step in (
        "run_tests",
        "migrate_fresh",
        "start_servers",
        "check_deliveries",
        "run_demo_epic",
    ):
        monkeypatch.setattr(run, step, lambda: None)

    assert run.run() == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "RUN:" in line][
        -1
    ] == "[release-smoke] RUN: stop servers"
    assert "[release-smoke] docker: skipped (--skip-docker)" in lines
    assert lines[-1] == "[release-smoke] SUCCESS"


def test_docker_step_is_skipped_with_the_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ReleaseSmoke(tmp_path, skip_docker=False)
    monkeypatch.setattr(smoke.shutil, "which", lambda name: "/usr/bin/docker")

    def docker_info(command, **kwargs):
        assert command == ["docker", "info"]
        return subprocess.CompletedProcess(
            command, 1, "", "Cannot connect to the Docker daemon. Is it running?\n"
        )

    monkeypatch.setattr(smoke.subprocess, "run", docker_info)

    assert (
        run.docker_unavailable()
        == "Cannot connect to the Docker daemon. Is it running?"
    )


def test_docker_step_is_skipped_without_a_docker_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smoke.shutil, "which", lambda name: None)

    assert ReleaseSmoke(tmp_path, skip_docker=False).docker_unavailable() == (
        "docker CLI not found"
    )


def test_children_get_the_generated_key_and_none_of_the_operators_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITEA_TOKEN", "operator-token")
    monkeypatch.setenv("ORKET_RUNTIME_DB_URL", "postgresql+psycopg://prod/orket")
    run = ReleaseSmoke(tmp_path, skip_docker=True)

    env = run.child_env()

    assert "GITEA_TOKEN" not in env
    assert env["ORKET_RUNTIME_DB_URL"].startswith(f"sqlite:///{tmp_path}/.smoke/")
    assert env["ORKET_API_KEY"] == run.api_key and len(run.api_key) >= 40
    assert env["GITEA_WEBHOOK_SECRET"] == run.webhook_secret
    assert env["ORKET_PORT"] != env["ORKET_WEBHOOK_PORT"]
