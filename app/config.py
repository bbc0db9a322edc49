"""One immutable settings object per process, read from the environment and `.env`.

The real environment wins over `./.env`. Nothing else in the package reads
`os.environ`: every module takes what it needs from a `Settings` instance.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def _env(name: str, **kwargs: Any) -> Any:
    """A field read from the environment variable `name`.

    Tests and callers may also pass the Python field name (populate_by_name).
    """
    return Field(validation_alias=AliasChoices(name), **kwargs)


class Settings(BaseSettings):
    """Every setting of SPEC CFG-2, with the defaults given there."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        case_sensitive=True,
    )

    # Binds
    host: str = _env("ORKET_HOST", default="127.0.0.1")
    port: int = _env("ORKET_PORT", default=8082, ge=1, le=65535)
    webhook_host: str = _env("ORKET_WEBHOOK_HOST", default="127.0.0.1")
    webhook_port: int = _env("ORKET_WEBHOOK_PORT", default=8080, ge=1, le=65535)

    # API auth and CORS
    api_key: str | None = _env("ORKET_API_KEY", default=None)
    api_key_previous: str | None = _env("ORKET_API_KEY_PREVIOUS", default=None)
    dev_no_auth: bool = _env("ORKET_DEV_NO_AUTH", default=False)
    allowed_origins_raw: str = _env(
        "ORKET_ALLOWED_ORIGINS",
        default="http://localhost:5173,http://127.0.0.1:5173",
    )

    # Storage and assets
    data_dir: Path = _env("ORKET_DATA_DIR", default=Path("./workspace"))
    config_dir: Path = _env("ORKET_CONFIG_DIR", default=Path("./config"))
    model_dir: Path = _env("ORKET_MODEL_DIR", default=Path("./model"))
    runtime_db_url_raw: str | None = _env("ORKET_RUNTIME_DB_URL", default=None)
    webhook_db_url_raw: str | None = _env("ORKET_WEBHOOK_DB_URL", default=None)
    log_level: Literal["debug", "info", "warning", "error"] = _env(
        "ORKET_LOG_LEVEL", default="info"
    )

    # Jobs and engine
    max_runs: int = _env("ORKET_MAX_RUNS", default=2, ge=1, le=64)
    max_sandbox_jobs: int = _env("ORKET_MAX_SANDBOX_JOBS", default=1, ge=1, le=16)
    epic_concurrency: int = _env("ORKET_EPIC_CONCURRENCY", default=3, ge=1, le=64)
    max_ticks: int = _env("ORKET_MAX_TICKS", default=20, ge=1, le=10_000)
    max_turns_per_issue: int = _env(
        "ORKET_MAX_TURNS_PER_ISSUE", default=6, ge=1, le=100
    )
    max_violations_per_issue: int = _env(
        "ORKET_MAX_VIOLATIONS_PER_ISSUE", default=3, ge=1, le=100
    )
    context_window: int = _env("ORKET_CONTEXT_WINDOW", default=10, ge=1, le=1000)
    org_name: str | None = _env("ORKET_ORG_NAME", default=None)
    org_vision: str | None = _env("ORKET_ORG_VISION", default=None)
    dispatch_poll_ms: int = _env("ORKET_DISPATCH_POLL_MS", default=500, ge=10)
    heartbeat_sec: float = _env("ORKET_HEARTBEAT_SEC", default=15.0, gt=0)
    stale_run_sec: float = _env("ORKET_STALE_RUN_SEC", default=120.0, gt=0)
    shutdown_wait_sec: float = _env("ORKET_SHUTDOWN_WAIT_SEC", default=20.0, ge=0)
    housekeeper_sec: float = _env("ORKET_HOUSEKEEPER_SEC", default=300.0, gt=0)
    prune_interval_sec: float = _env("ORKET_PRUNE_INTERVAL_SEC", default=3600.0, gt=0)

    # Model providers
    ollama_host: str = _env("OLLAMA_HOST", default="http://127.0.0.1:11434")
    openai_base_url: str | None = _env("ORKET_OPENAI_BASE_URL", default=None)
    openai_api_key: str | None = _env("ORKET_OPENAI_API_KEY", default=None)
    model_timeout_sec: float = _env("ORKET_MODEL_TIMEOUT_SEC", default=300.0, gt=0)
    model_retry_base_sec: float = _env("ORKET_MODEL_RETRY_BASE_SEC", default=1.0, ge=0)
    driver_environment: str = _env("ORKET_DRIVER_ENVIRONMENT", default="standard")
    chat_driver_timeout_sec: float = _env(
        "ORKET_CHAT_DRIVER_TIMEOUT_SEC", default=60.0, gt=0
    )

    # Verification
    verify_timeout_sec: float = _env("ORKET_VERIFY_TIMEOUT_SEC", default=5.0, gt=0)
    verify_cpu_sec: int = _env("ORKET_VERIFY_CPU_SEC", default=2, ge=1)
    verify_mem_mb: int = _env("ORKET_VERIFY_MEM_MB", default=256, ge=16)
    verify_max_procs: int = _env("ORKET_VERIFY_MAX_PROCS", default=16, ge=1)
    verify_network: Literal["auto", "namespace", "guard"] = _env(
        "ORKET_VERIFY_NETWORK", default="auto"
    )

    # Events and WebSockets
    ws_ping_sec: float = _env("ORKET_WS_PING_SEC", default=25.0, gt=0)
    ws_queue: int = _env("ORKET_WS_QUEUE", default=1000, ge=1)
    ws_max_clients: int = _env("ORKET_WS_MAX_CLIENTS", default=200, ge=1)
    event_poll_ms: int = _env("ORKET_EVENT_POLL_MS", default=200, ge=10)
    event_retention_days: float = _env("ORKET_EVENT_RETENTION_DAYS", default=14, gt=0)
    event_max_rows: int = _env("ORKET_EVENT_MAX_ROWS", default=200_000, ge=1)
    payload_retention_days: float = _env(
        "ORKET_PAYLOAD_RETENTION_DAYS", default=30, gt=0
    )
    api_threads_raw: int | None = _env("ORKET_API_THREADS", default=None, ge=1)

    # Gitea and the webhook
    gitea_url: str = _env("GITEA_URL", default="http://localhost:3000")
    gitea_token: str | None = _env("GITEA_TOKEN", default=None)
    gitea_admin_user: str = _env("GITEA_ADMIN_USER", default="Orket")
    gitea_admin_password: str | None = _env("GITEA_ADMIN_PASSWORD", default=None)
    gitea_bot_login_raw: str | None = _env("ORKET_GITEA_BOT_LOGIN", default=None)
    gitea_timeout_sec: float = _env("ORKET_GITEA_TIMEOUT_SEC", default=10.0, gt=0)
    webhook_secret: str | None = _env("GITEA_WEBHOOK_SECRET", default=None)
    webhook_secret_previous: str | None = _env(
        "GITEA_WEBHOOK_SECRET_PREVIOUS", default=None
    )
    rate_limit: int = _env("ORKET_RATE_LIMIT", default=60, ge=1)
    unsigned_rate_limit: int = _env("ORKET_UNSIGNED_RATE_LIMIT", default=10, ge=1)
    rate_window_sec: float = _env("ORKET_RATE_WINDOW_SEC", default=60.0, gt=0)
    trusted_proxies: int = _env("ORKET_TRUSTED_PROXIES", default=0, ge=0, le=10)
    review_escalate_at: int = _env("ORKET_REVIEW_ESCALATE_AT", default=3, ge=1)
    review_reject_at: int = _env("ORKET_REVIEW_REJECT_AT", default=4, ge=2)
    outbox_max_attempts: int = _env("ORKET_OUTBOX_MAX_ATTEMPTS", default=8, ge=1)
    outbox_poll_ms: int = _env("ORKET_OUTBOX_POLL_MS", default=500, ge=10)
    outbox_lease_sec: float = _env("ORKET_OUTBOX_LEASE_SEC", default=60.0, gt=0)
    outbox_backoff_max_sec: float = _env(
        "ORKET_OUTBOX_BACKOFF_MAX_SEC", default=300.0, gt=0
    )
    bugfix_days: float = _env("ORKET_BUGFIX_DAYS", default=7, gt=0)
    bugfix_max_days: float = _env("ORKET_BUGFIX_MAX_DAYS", default=28, gt=0)
    bugfix_check_sec: float = _env("ORKET_BUGFIX_CHECK_SEC", default=3600.0, gt=0)
    enable_webhook_test_endpoint: bool = _env(
        "ORKET_ENABLE_WEBHOOK_TEST_ENDPOINT", default=False
    )
    webhook_test_token: str | None = _env("ORKET_WEBHOOK_TEST_TOKEN", default=None)

    # Sandboxes
    sandbox_port_range: str = _env("ORKET_SANDBOX_PORT_RANGE", default="18000-18999")
    sandbox_public_host: str = _env("ORKET_SANDBOX_PUBLIC_HOST", default="localhost")
    sandbox_tech_stack: str = _env(
        "ORKET_SANDBOX_TECH_STACK", default="fastapi-react-postgres"
    )
    sandbox_timeout_sec: float = _env("ORKET_SANDBOX_TIMEOUT_SEC", default=900.0, gt=0)
    sandbox_health_sec: float = _env("ORKET_SANDBOX_HEALTH_SEC", default=300.0, gt=0)

    # Operations
    skip_migrate: bool = _env("ORKET_SKIP_MIGRATE", default=False)
    test_database_url: str | None = _env("ORKET_TEST_DATABASE_URL", default=None)

    @field_validator(
        "api_key",
        "api_key_previous",
        "webhook_secret",
        "webhook_secret_previous",
        "gitea_token",
        "gitea_admin_password",
        "webhook_test_token",
        "openai_base_url",
        "openai_api_key",
        "runtime_db_url_raw",
        "webhook_db_url_raw",
        "org_name",
        "org_vision",
        "gitea_bot_login_raw",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("sandbox_port_range")
    @classmethod
    def _port_range_is_valid(cls, value: str) -> str:
        low, sep, high = value.partition("-")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError("expected LOW-HIGH, for example 18000-18999")
        if not 1 <= int(low) <= int(high) <= 65535:
            raise ValueError("ports must satisfy 1 <= LOW <= HIGH <= 65535")
        return value

    @model_validator(mode="after")
    def _thresholds_are_ordered(self) -> Settings:
        if not 1 <= self.review_escalate_at < self.review_reject_at:
            raise ValueError(
                "ORKET_REVIEW_ESCALATE_AT must be at least 1 and below "
                "ORKET_REVIEW_REJECT_AT"
            )
        return self

    # Derived values ---------------------------------------------------------

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def config_path(self) -> Path:
        return self.config_dir.expanduser().resolve()

    @property
    def model_path(self) -> Path:
        return self.model_dir.expanduser().resolve()

    @property
    def runtime_db_url(self) -> str:
        return self.runtime_db_url_raw or sqlite_url(
            self.data_path / "orket_persistence.db"
        )

    @property
    def webhook_db_url(self) -> str:
        return self.webhook_db_url_raw or sqlite_url(self.data_path / "webhook.db")

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        parts = (
            item.strip().rstrip("/") for item in self.allowed_origins_raw.split(",")
        )
        return tuple(part for part in parts if part)

    @property
    def api_threads(self) -> int:
        return self.api_threads_raw or self.ws_max_clients + 32

    @property
    def gitea_bot_login(self) -> str:
        return self.gitea_bot_login_raw or self.gitea_admin_user

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(key for key in (self.api_key, self.api_key_previous) if key)

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        secrets_ = (self.webhook_secret, self.webhook_secret_previous)
        return tuple(secret for secret in secrets_ if secret)

    @property
    def sandbox_ports(self) -> tuple[int, int]:
        low, _, high = self.sandbox_port_range.partition("-")
        return int(low), int(high)

    @property
    def gitea_credentials_configured(self) -> bool:
        return bool(self.gitea_token or self.gitea_admin_password)

    @property
    def host_is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def log_file(self) -> Path:
        return self.data_path / "default" / "orket.log"

    @property
    def verification_root(self) -> Path:
        return self.data_path / "verification"

    @property
    def builds_root(self) -> Path:
        return self.data_path / "builds"

    @property
    def sandboxes_root(self) -> Path:
        return self.data_path / "sandboxes"

    @property
    def run_dir(self) -> Path:
        return self.data_path / "run"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def database_url_from_cli(value: str) -> str:
    """A `--runtime-db` / `--webhook-db` value: a URL as is, a file path as SQLite."""
    if "://" in value:
        return value
    return sqlite_url(Path(value).expanduser().resolve())


def is_loopback_host(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        names = [str(part) for part in error.get("loc", ()) if part != "__root__"]
        field = names[0] if names else ""
        variable = _variable_for(field)
        message = error.get("msg", "invalid value").removeprefix("Value error, ")
        problems.append(f"{variable}: {message}" if variable else message)
    return "Invalid setting " + "; ".join(problems)


def _variable_for(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:
        return field
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field
