"""Hostile input found by a break-it session: each must be a clean 4xx, never a 500."""

import hashlib
import hmac
import json

import pytest

from app.engine.workspace import OutsideWorkspace, workspace_for
from app.runs import BadBuildId, validate_build_id
from tests.conftest import WEBHOOK_SECRET


@pytest.mark.parametrize("build_id", [".", "..", "...."])
def test_build_ids_made_of_dots_are_refused(build_id: str) -> None:
    with pytest.raises(BadBuildId):
        validate_build_id(build_id)


def test_run_active_refuses_a_parent_directory_build_id(client, auth_headers) -> None:
    response = client.post(
        "/v1/system/run-active",
        json={"path": "model/core/epics/demo.json", "build_id": ".."},
        headers=auth_headers,
    )

    assert response.status_code == 422


def test_workspace_never_resolves_outside_the_builds_folder(tmp_path) -> None:
    assert workspace_for(tmp_path, "demo-a") == tmp_path / "demo-a"
    for bad in ("..", ".", "a/../.."):
        with pytest.raises(OutsideWorkspace):
            workspace_for(tmp_path, bad)


def test_log_files_cannot_be_read_over_the_api(client, auth_headers, settings) -> None:
    settings.log_file.parent.mkdir(parents=True, exist_ok=True)
    settings.log_file.write_text('{"traceback": "Traceback (most recent call last)"}\n')

    response = client.get(
        "/v1/system/read",
        query_string={"path": "default/orket.log"},
        headers=auth_headers,
    )

    assert response.status_code == 403
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("url", "query"),
    [
        ("/v1/events", {"after": str(2**63)}),
        ("/v1/runs", {"offset": str(2**63)}),
    ],
)
def test_integers_beyond_the_database_range_are_422(client, auth_headers, url, query):
    response = client.get(url, query_string=query, headers=auth_headers)

    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"path": "\\ud800", "content": "x"}',
    ],
)
def test_unusable_json_bodies_are_422(client, auth_headers, body: bytes) -> None:
    response = client.post(
        "/v1/system/save",
        data=body,
        headers={**auth_headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["body"]


def test_save_with_a_name_too_long_is_400(client, auth_headers) -> None:
    response = client.post(
        "/v1/system/save",
        json={"path": "a" * 300, "content": "hi"},
        headers=auth_headers,
    )

    assert response.status_code == 400


def _signed_post(webhook_client, payload: bytes):
    signature = hmac.new(WEBHOOK_SECRET.encode(), payload, hashlib.sha256).hexdigest()
    return webhook_client.post(
        "/webhook/gitea",
        data=payload,
        headers={
            "Content-Type": "application/json",
            "X-Gitea-Event": "pull_request",
            "X-Gitea-Event-Type": "pull_request",
            "X-Gitea-Signature": signature,
        },
    )


def test_signed_delivery_with_an_enormous_pr_number_is_422(webhook_client) -> None:
    body = json.dumps(
        {"action": "opened", "number": 2**70, "repository": {"full_name": "o/r"}}
    ).encode()

    assert _signed_post(webhook_client, body).status_code == 422


def test_signed_delivery_with_a_lone_surrogate_is_400(webhook_client) -> None:
    body = b'{"action": "\\ud800", "number": 1, "repository": {"full_name": "o/r"}}'

    response = _signed_post(webhook_client, body)

    assert response.status_code == 400
    assert response.get_json() == {"detail": "Invalid payload: malformed JSON"}
