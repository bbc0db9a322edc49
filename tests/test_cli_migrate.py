import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def _flask(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORKET_", "GITEA_"))
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            str(PROJECT_ROOT / "wsgi.py"),
            "orket",
            *args,
        ],
        cwd=cwd,
        env={**base, **env, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_creates_both_databases_at_head_and_check_passes(
    tmp_path: Path,
) -> None:
    env = {"ORKET_DATA_DIR": str(tmp_path / "ws")}

    first = _flask(["migrate"], tmp_path, env)
    check = _flask(["migrate", "--check"], tmp_path, env)

    assert first.returncode == 0, first.stderr
    assert "[MIGRATE] runtime: None -> 0001" in first.stdout
    assert "[MIGRATE] webhook: None -> 0001" in first.stdout
    assert (tmp_path / "ws" / "orket_persistence.db").exists()
    assert (tmp_path / "ws" / "webhook.db").exists()
    assert check.returncode == 0


def test_migrate_check_fails_on_a_fresh_database(tmp_path: Path) -> None:
    result = _flask(
        ["migrate", "--check"], tmp_path, {"ORKET_DATA_DIR": str(tmp_path / "ws")}
    )

    assert result.returncode == 1
    assert "behind" in result.stdout


def test_migrate_path_overrides(tmp_path: Path) -> None:
    runtime, webhook = tmp_path / "srv" / "rt.db", tmp_path / "srv" / "wh.db"

    result = _flask(
        ["migrate", "--runtime-db", str(runtime), "--webhook-db", str(webhook)],
        tmp_path,
        {"ORKET_DATA_DIR": str(tmp_path / "ws")},
    )

    assert result.returncode == 0, result.stderr
    assert runtime.exists() and webhook.exists()


def test_migrate_on_unversioned_tables_is_a_clear_failure(tmp_path: Path) -> None:
    import sqlite3

    legacy = tmp_path / "legacy.db"
    sqlite3.connect(legacy).execute(
        "CREATE TABLE sessions (id TEXT)"
    ).connection.commit()

    result = _flask(["migrate", "--runtime-db", str(legacy)], tmp_path, {})

    assert result.returncode == 1
    assert "unversioned tables" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_check_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "rt.db"

    result = _flask(
        ["migrate", "--check", "--runtime-db", str(target)],
        tmp_path,
        {"ORKET_DATA_DIR": str(tmp_path / "ws")},
    )

    assert result.returncode == 1
    assert not target.exists() and not target.parent.exists()
