import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.migrate import downgrade
from app.serving.lock import ApiProcessLock
from app.serving.startup import StartupError, copy_packaged_fixtures, precheck
from tests.conftest import PROJECT_ROOT, settings_environment


def test_api_refuses_to_start_without_a_key(settings_factory) -> None:
    with pytest.raises(StartupError, match="ORKET_API_KEY is not set"):
        precheck(settings_factory(api_key=None), "api")


def test_keyless_development_needs_a_loopback_bind(settings_factory) -> None:
    with pytest.raises(StartupError, match="loopback"):
        precheck(
            settings_factory(api_key=None, dev_no_auth=True, host="0.0.0.0"), "api"
        )

    precheck(settings_factory(api_key=None, dev_no_auth=True, host="127.0.0.1"), "api")


def test_webhook_refuses_to_start_without_a_secret(settings_factory) -> None:
    with pytest.raises(StartupError, match="GITEA_WEBHOOK_SECRET is not set"):
        precheck(settings_factory(webhook_secret=None), "webhook")


def test_webhook_test_endpoint_needs_a_token(settings_factory) -> None:
    settings = settings_factory(enable_webhook_test_endpoint=True)

    with pytest.raises(StartupError, match="ORKET_WEBHOOK_TEST_TOKEN"):
        precheck(settings, "webhook")


def test_database_behind_head_is_refused_naming_make_migrate(settings) -> None:
    downgrade("webhook", settings.webhook_db_url)
    try:
        with pytest.raises(StartupError) as raised:
            precheck(settings, "api")
        assert str(raised.value) == "Database webhook is not at head; run: make migrate"
    finally:
        from app.migrate import upgrade

        upgrade("webhook", settings.webhook_db_url)


def test_unusable_data_directory_is_one_clear_line(
    settings_factory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(StartupError, match="Cannot use the data directory"):
        precheck(settings_factory(data_dir=blocker / "data"), "api")


def test_second_api_process_on_the_same_database_is_refused(settings) -> None:
    holder = ApiProcessLock(settings)
    holder.acquire()
    try:
        with pytest.raises(StartupError, match="Another API process"):
            precheck(settings, "api")
    finally:
        holder.release()

    precheck(settings, "api")


def test_packaged_fixtures_are_copied_but_never_overwritten(settings) -> None:
    target = settings.verification_root / "demo" / "calc_fixture.py"
    target.parent.mkdir(parents=True)
    target.write_text("# operator's own version\n")

    copy_packaged_fixtures(settings)

    assert target.read_text() == "# operator's own version\n"


def _gunicorn(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORKET_", "GITEA_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", f"python:app.serving.{module}"],
        cwd=PROJECT_ROOT,
        env={**base, **env, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "drop", "expected"),
    [
        ("gunicorn_api", "ORKET_API_KEY", "ORKET_API_KEY is not set"),
        ("gunicorn_webhook", "GITEA_WEBHOOK_SECRET", "GITEA_WEBHOOK_SECRET is not set"),
    ],
)
def test_real_server_refusal_is_one_line_without_traceback(
    settings, module: str, drop: str, expected: str
) -> None:
    env = settings_environment(settings)
    env.pop(drop)

    result = _gunicorn(module, env)

    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_real_server_refuses_a_bad_port_naming_it(settings) -> None:
    env = settings_environment(settings)
    env["ORKET_PORT"] = "not-a-port"

    result = _gunicorn("gunicorn_api", env)

    assert result.returncode != 0
    assert "ORKET_PORT" in result.stderr
    assert "Traceback" not in result.stderr
