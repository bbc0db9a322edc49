"""Every `/v1` route of the URL map and `/metrics`: 401 without a key, 403 with a
wrong one, and success with each key form (API-1, SEC-2)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.models.base import utcnow
from app.models.runtime import Sandbox
from tests.api_support import add_card, add_run, scripted_environment
from tests.conftest import API_KEY

KEY_FORMS = {
    "x-api-key": {"X-API-Key": API_KEY},
    "bearer": {"Authorization": f"Bearer {API_KEY}"},
}
DEMO_FIXTURE = Path(__file__).resolve().parent.parent / "app/assets/verification/demo"
VERIFICATION = {
    "fixture_path": "verification/demo/calc_fixture.py",
    "scenarios": [{"id": "S1", "input_data": {"a": 1, "b": 2}, "expected_output": 3}],
}

# A request that succeeds for each (rule, method), given the form's name so that
# requests that change state (queueing, stopping) do not collide between forms.
Sample = Callable[[str], tuple[str, dict[str, Any] | None]]
SAMPLES: dict[tuple[str, str], Sample] = {
    ("/metrics", "GET"): lambda _: ("/metrics", None),
    ("/v1/version", "GET"): lambda _: ("/v1/version", None),
    ("/v1/openapi.json", "GET"): lambda _: ("/v1/openapi.json", None),
    ("/v1/system/clear-logs", "POST"): lambda _: ("/v1/system/clear-logs", None),
    ("/v1/system/heartbeat", "GET"): lambda _: ("/v1/system/heartbeat", None),
    ("/v1/system/metrics", "GET"): lambda _: ("/v1/system/metrics", None),
    ("/v1/system/explorer", "GET"): lambda _: ("/v1/system/explorer?path=.", None),
    ("/v1/system/read", "GET"): lambda _: ("/v1/system/read?path=notes.txt", None),
    ("/v1/system/save", "POST"): lambda form: (
        "/v1/system/save",
        {"path": f"notes-{form}.txt", "content": "hello"},
    ),
    ("/v1/system/calendar", "GET"): lambda _: ("/v1/system/calendar", None),
    ("/v1/system/run-active", "POST"): lambda form: (
        "/v1/system/run-active",
        {"path": "model/core/epics/demo.json", "build_id": f"auth-{form}"},
    ),
    ("/v1/system/board", "GET"): lambda _: ("/v1/system/board", None),
    ("/v1/system/preview-asset", "GET"): lambda _: (
        "/v1/system/preview-asset?path=model/core/epics/demo.json",
        None,
    ),
    ("/v1/system/chat-driver", "POST"): lambda _: (
        "/v1/system/chat-driver",
        {"message": "hello"},
    ),
    ("/v1/runs", "GET"): lambda _: ("/v1/runs", None),
    ("/v1/runs/<run_id>", "GET"): lambda _: ("/v1/runs/run00001", None),
    ("/v1/runs/<run_id>/halt", "POST"): lambda _: ("/v1/runs/run00001/halt", None),
    ("/v1/runs/<run_id>/metrics", "GET"): lambda _: ("/v1/runs/run00001/metrics", None),
    ("/v1/runs/<run_id>/backlog", "GET"): lambda _: ("/v1/runs/run00001/backlog", None),
    ("/v1/sessions/<run_id>", "GET"): lambda _: ("/v1/sessions/run00001", None),
    ("/v1/sessions/<run_id>/snapshot", "GET"): lambda _: (
        "/v1/sessions/run00002/snapshot",
        None,
    ),
    ("/v1/cards/<card_id>", "GET"): lambda _: ("/v1/cards/DEMO-1", None),
    ("/v1/cards/<card_id>/verify", "POST"): lambda _: ("/v1/cards/DEMO-1/verify", None),
    ("/v1/events", "GET"): lambda _: ("/v1/events?after=0", None),
    ("/v1/sandboxes", "GET"): lambda _: ("/v1/sandboxes?all=true", None),
    ("/v1/sandboxes/<sandbox_id>/stop", "POST"): lambda form: (
        f"/v1/sandboxes/sandbox-{form}/stop",
        None,
    ),
}
# Reaching the route is what these show: without Docker the logs answer 503.
AUTH_ONLY = {("/v1/sandboxes/<sandbox_id>/logs", "GET"): "/v1/sandboxes/sandbox-x/logs"}


def protected_operations(flask_app) -> list[tuple[str, str]]:
    operations = []
    for rule in flask_app.url_map.iter_rules():
        if rule.rule.startswith("/v1/") or rule.rule == "/metrics":
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                operations.append((rule.rule, method))
    return sorted(operations)


def any_url(rule: str, method: str) -> str:
    if (rule, method) in SAMPLES:
        return SAMPLES[(rule, method)]("x-api-key")[0]
    return AUTH_ONLY[(rule, method)]


@pytest.fixture
def seeded(app, settings, runtime_db):
    """State every sample needs to succeed."""
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    (data / "notes.txt").write_text("hello")
    shutil.copytree(DEMO_FIXTURE, settings.verification_root / "demo")
    scripted_environment(
        settings.config_path, "standard", {"DRIVER": ["No plan today."]}
    )
    add_run(runtime_db, "run00001", status="running", builds=["b-run"])
    add_run(runtime_db, "run00002", status="done", builds=["b-done"])
    from app.models.runtime import SessionSnapshot

    with runtime_db.transaction() as session:
        session.add(
            SessionSnapshot(session_id="run00002", config_json="{}", log_history="[]")
        )
        for form in KEY_FORMS:
            session.add(
                Sandbox(
                    id=f"sandbox-{form}",
                    tech_stack="fastapi-react-postgres",
                    status="running",
                    compose_project=f"orket-sandbox-{form}",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
    add_card(runtime_db, "DEMO-1", verification=VERIFICATION)


def test_every_protected_route_has_a_sample(app):
    known = set(SAMPLES) | set(AUTH_ONLY)

    assert set(protected_operations(app)) - known == set()


def test_missing_key_is_401_everywhere(app, client):
    for rule, method in protected_operations(app):
        response = client.open(any_url(rule, method), method=method, json={})
        assert response.status_code == 401, rule
        assert response.get_json() == {"detail": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": API_KEY + "x"},
    ],
)
def test_wrong_key_is_403_everywhere(app, client, headers):
    for rule, method in protected_operations(app):
        response = client.open(
            any_url(rule, method), method=method, json={}, headers=headers
        )
        assert response.status_code == 403, rule
        assert response.get_json() == {"detail": "Could not validate credentials"}


@pytest.mark.parametrize("form", sorted(KEY_FORMS))
def test_both_key_forms_succeed_everywhere(app, client, seeded, form):
    for rule, method in protected_operations(app):
        if (rule, method) in AUTH_ONLY:
            response = client.open(
                AUTH_ONLY[(rule, method)], method=method, headers=KEY_FORMS[form]
            )
            assert response.status_code not in (401, 403), rule
            continue
        url, body = SAMPLES[(rule, method)](form)
        response = client.open(url, method=method, json=body, headers=KEY_FORMS[form])
        assert 200 <= response.status_code < 300, (rule, method, response.get_json())
