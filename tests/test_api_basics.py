import json
from pathlib import Path

import pytest

from tests.conftest import API_KEY


def test_health_reports_the_runtime_database(client) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "organization": "Orket",
        "checks": {"runtime_db": "ok"},
    }


def test_health_is_503_when_the_database_is_unreachable(
    settings_factory, tmp_path: Path
) -> None:
    from app import create_app

    # A directory is not a database file: every connection fails.
    broken = create_app(settings_factory(runtime_db_url_raw=f"sqlite:///{tmp_path}"))

    response = broken.test_client().get("/health")

    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "checks": {"runtime_db": "error"},
    }


def test_webhook_health_and_root(webhook_client) -> None:
    health = webhook_client.get("/health")
    root = webhook_client.get("/")

    assert health.status_code == 200
    assert health.get_json() == {
        "status": "healthy",
        "checks": {
            "webhook_db": "ok",
            "runtime_db": "ok",
            "gitea_credentials": "missing",
        },
    }
    assert root.get_json()["service"] == "Orket Webhook Server"
    assert root.get_json()["status"] == "running"


def test_webhook_health_is_503_when_a_database_is_unreachable(
    settings_factory, tmp_path: Path
) -> None:
    from app import create_webhook_app

    broken = create_webhook_app(
        settings_factory(webhook_db_url_raw=f"sqlite:///{tmp_path}")
    )

    response = broken.test_client().get("/health")

    assert response.status_code == 503
    assert response.get_json()["checks"]["webhook_db"] == "error"
    assert response.get_json()["status"] == "unavailable"


def test_missing_key_is_401_with_a_bearer_challenge(client) -> None:
    response = client.get("/v1/version")

    assert response.status_code == 401
    assert response.get_json() == {"detail": "Not authenticated"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_key_is_403(client) -> None:
    response = client.get("/v1/version", headers={"X-API-Key": "nope"})

    assert response.status_code == 403
    assert response.get_json() == {"detail": "Could not validate credentials"}


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}],
)
def test_both_key_forms_are_accepted(client, headers) -> None:
    response = client.get("/v1/version", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["api"] == "v1"


def test_previous_key_is_accepted_during_rotation(settings_factory) -> None:
    from app import create_app

    rotated = create_app(settings_factory(api_key="new-key", api_key_previous=API_KEY))

    assert (
        rotated.test_client()
        .get("/v1/version", headers={"X-API-Key": API_KEY})
        .status_code
        == 200
    )


def test_unknown_route_is_json_404(client, auth_headers) -> None:
    response = client.get("/v1/nothing-here", headers=auth_headers)

    assert response.status_code == 404
    assert response.get_json() == {"detail": "Not Found"}


def test_wrong_method_is_json_405(client, auth_headers) -> None:
    response = client.delete("/v1/version", headers=auth_headers)

    assert response.status_code == 405
    assert response.get_json() == {"detail": "Method Not Allowed"}


def test_unhandled_error_is_json_500_without_traceback(app, settings) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"secret detail {settings.data_path}")

    response = app.test_client().get("/boom")

    assert response.status_code == 500
    assert response.get_json() == {"detail": "Internal Server Error"}
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "secret detail" not in body
    log_lines = settings.log_file.read_text().splitlines()
    record = json.loads(log_lines[-1])
    assert record["event"] == "internal_error"
    assert "Traceback" in record["traceback"]


def _add_v1_post_route(flask_app) -> None:
    """A POST route inside the /v1 blueprint (endpoint prefix `v1.`)."""
    flask_app.add_url_rule(
        "/v1/test-echo",
        endpoint="v1.test_echo",
        view_func=lambda: {"ok": True},
        methods=["POST"],
    )


def test_body_over_two_mebibytes_is_413(app, auth_headers) -> None:
    _add_v1_post_route(app)

    response = app.test_client().post(
        "/v1/test-echo",
        data=b"x" * (2 * 1024 * 1024 + 1),
        headers={**auth_headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.get_json() == {"detail": "Payload too large"}


def test_allowed_origin_gets_cors_headers(client, auth_headers) -> None:
    response = client.get(
        "/v1/version", headers={**auth_headers, "Origin": "http://localhost:5173"}
    )

    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "Origin" in response.headers["Vary"]


def test_other_origin_gets_no_cors_headers_but_vary(client, auth_headers) -> None:
    response = client.get(
        "/v1/version", headers={**auth_headers, "Origin": "https://evil.test"}
    )

    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


def test_preflight_needs_no_key(client) -> None:
    response = client.options(
        "/v1/version",
        headers={
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert "X-API-Key" in response.headers["Access-Control-Allow-Headers"]
    assert response.headers["Access-Control-Max-Age"] == "600"


def test_keyless_dev_mode_refuses_foreign_hosts_and_origins(settings_factory) -> None:
    from app import create_app

    dev_app = create_app(settings_factory(api_key=None, dev_no_auth=True))
    _add_v1_post_route(dev_app)
    dev = dev_app.test_client()

    assert dev.get("/v1/version", headers={"Host": "127.0.0.1:8082"}).status_code == 200
    assert (
        dev.get("/v1/version", headers={"Host": "orket.example.com"}).status_code == 403
    )
    foreign_post = dev.post(
        "/v1/test-echo",
        headers={"Host": "localhost:8082", "Origin": "https://evil.test"},
    )
    local_post = dev.post(
        "/v1/test-echo",
        headers={"Host": "localhost:8082", "Origin": "http://localhost:5173"},
    )
    assert foreign_post.status_code == 403
    assert local_post.status_code == 200
