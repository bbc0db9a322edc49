import stat
from pathlib import Path

from dotenv import dotenv_values

from app.serving.first_run import ensure_env_file


def test_creates_env_with_generated_secrets_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / ".env"

    added = ensure_env_file(path, environ={})

    assert added == ["ORKET_API_KEY", "GITEA_WEBHOOK_SECRET"]
    values = dotenv_values(path)
    assert len(values["ORKET_API_KEY"]) >= 40
    assert len(values["GITEA_WEBHOOK_SECRET"]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_never_overwrites_existing_values(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("ORKET_API_KEY=mine\nOTHER=1")

    added = ensure_env_file(path, environ={})

    values = dotenv_values(path)
    assert added == ["GITEA_WEBHOOK_SECRET"]
    assert values["ORKET_API_KEY"] == "mine"
    assert values["OTHER"] == "1"


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    ensure_env_file(path, environ={})
    before = path.read_text()

    assert ensure_env_file(path, environ={}) == []
    assert path.read_text() == before


def test_variables_from_the_environment_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / ".env"

    added = ensure_env_file(path, environ={"ORKET_API_KEY": "from-env"})

    assert added == ["GITEA_WEBHOOK_SECRET"]
    assert "ORKET_API_KEY" not in dotenv_values(path)


def test_key_is_printed_only_on_the_run_that_generated_it(
    tmp_path: Path, capsys
) -> None:
    from app.serving.first_run import print_instructions

    path = tmp_path / ".env"
    path.write_text("ORKET_API_KEY=generated-key-123\n")

    print_instructions(path, environ={}, show_key=True)
    first = capsys.readouterr().out
    print_instructions(path, environ={})
    later = capsys.readouterr().out

    assert "generated-key-123" in first
    assert "generated-key-123" not in later
