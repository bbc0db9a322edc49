from pathlib import Path

import pytest

from app.config import (
    SettingsError,
    database_url_from_cli,
    is_loopback_host,
    load_settings,
)


def test_real_environment_beats_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ORKET_PORT=9001\nORKET_HOST=10.1.2.3\n")
    monkeypatch.setenv("ORKET_PORT", "9002")

    settings = load_settings()

    assert settings.port == 9002
    assert settings.host == "10.1.2.3"


def test_allowed_origins_come_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "ORKET_ALLOWED_ORIGINS=https://a.example, https://b.example/\n"
    )

    assert load_settings().allowed_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ORKET_PORT", "eighty"),
        ("ORKET_PORT", "70000"),
        ("ORKET_DEV_NO_AUTH", "maybe"),
        ("ORKET_MAX_RUNS", "0"),
        ("ORKET_VERIFY_NETWORK", "sometimes"),
        ("ORKET_SANDBOX_PORT_RANGE", "18999-18000"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert variable in str(raised.value)
    assert "\n" not in str(raised.value)


def test_review_thresholds_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORKET_REVIEW_ESCALATE_AT", "4")
    monkeypatch.setenv("ORKET_REVIEW_REJECT_AT", "4")

    with pytest.raises(SettingsError, match="ORKET_REVIEW_ESCALATE_AT"):
        load_settings()


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE"])
def test_booleans_accept_the_documented_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORKET_DEV_NO_AUTH", value)

    assert load_settings().dev_no_auth is True


def test_defaults_follow_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORKET_DATA_DIR", str(tmp_path / "d"))

    settings = load_settings()

    assert (
        settings.runtime_db_url
        == f"sqlite:///{tmp_path / 'd' / 'orket_persistence.db'}"
    )
    assert settings.webhook_db_url == f"sqlite:///{tmp_path / 'd' / 'webhook.db'}"
    assert settings.api_threads == settings.ws_max_clients + 32
    assert settings.gitea_bot_login == "Orket"


def test_blank_secret_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORKET_API_KEY", "   ")

    assert load_settings().api_keys == ()


def test_cli_database_values(tmp_path: Path) -> None:
    assert database_url_from_cli("postgresql://x/y") == "postgresql://x/y"
    assert (
        database_url_from_cli(str(tmp_path / "a.db"))
        == f"sqlite:///{tmp_path / 'a.db'}"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
