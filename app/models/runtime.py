"""Tables of the runtime database (SPEC DB-2)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.models.base import BigIntegerPK, UTCDateTime, new_metadata, utcnow

CARD_STATUSES = (
    "ready",
    "in_progress",
    "blocked",
    "waiting_for_developer",
    "ready_for_testing",
    "code_review",
    "done",
    "canceled",
    "archived",
)
WAIT_REASONS = ("resource", "dependency", "review", "input", "system")
RUN_STATUSES = ("queued", "running", "done", "failed", "halted", "interrupted")
RUN_TYPES = ("epic", "rock", "issue")
SANDBOX_JOB_TYPES = ("sandbox_deploy", "sandbox_stop")
SANDBOX_STATUSES = (
    "creating",
    "running",
    "unhealthy",
    "stopping",
    "stopped",
    "deleted",
    "failed",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


class RuntimeBase(DeclarativeBase):
    metadata = new_metadata()


class Issue(RuntimeBase):
    """A card: one issue of an epic in one build."""

    __tablename__ = "issues"
    __table_args__ = (
        CheckConstraint(_in("status", CARD_STATUSES), name="status"),
        CheckConstraint(
            "wait_reason IS NULL OR " + _in("wait_reason", WAIT_REASONS),
            name="wait_reason",
        ),
        Index("idx_issues_build_status", "build_id", "status"),
        Index("idx_issues_session_id", "session_id"),
        Index("ix_issues_build_epic", "build_id", "epic_id"),
        Index("ix_issues_parent_id", "parent_id"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(32))
    build_id: Mapped[str] = mapped_column(String(64))
    epic_id: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[str | None] = mapped_column(String(200))
    seat: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(
        Text, default="Unnamed Unit", server_default="Unnamed Unit"
    )
    type: Mapped[str] = mapped_column(
        String(20), default="issue", server_default="issue"
    )
    priority: Mapped[str] = mapped_column(
        String(20), default="2.0", server_default="2.0"
    )
    sprint: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(
        String(32), default="ready", server_default="ready"
    )
    wait_reason: Mapped[str | None] = mapped_column(String(20))
    assignee: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    requirements: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(Text)
    credits_spent: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_retries: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    verification_json: Mapped[str | None] = mapped_column(Text)
    metrics_json: Mapped[str | None] = mapped_column(Text)
    depends_on_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Comment(RuntimeBase):
    __tablename__ = "comments"
    __table_args__ = (Index("idx_comments_issue_id", "issue_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issue_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("issues.id", ondelete="CASCADE")
    )
    author: Mapped[str | None] = mapped_column(String(100))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CardTransaction(RuntimeBase):
    """One line of a card's history; every status write appends one."""

    __tablename__ = "card_transactions"
    __table_args__ = (Index("idx_card_transactions_card_id", "card_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("issues.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(Text)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Session(RuntimeBase):
    """A run, and at the same time its entry in the job queue (JOB-1)."""

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index("ix_sessions_status_queued_at", "status", "queued_at"),
        Index("ix_sessions_build_status", "build_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(
        String(20), default="queued", server_default="queued"
    )
    task_input: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str] = mapped_column(String(200))
    build_id: Mapped[str | None] = mapped_column(String(64))
    builds_json: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    params_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    source: Mapped[str] = mapped_column(String(16))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    halt_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    error: Mapped[str | None] = mapped_column(Text)


class SessionSnapshot(RuntimeBase):
    __tablename__ = "session_snapshots"

    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    config_json: Mapped[str | None] = mapped_column(Text)
    log_history: Mapped[str | None] = mapped_column(Text)
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SuccessLedger(RuntimeBase):
    __tablename__ = "success_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(32), ForeignKey("sessions.id"))
    success_type: Mapped[str] = mapped_column(String(40))
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    human_ack: Mapped[str | None] = mapped_column(Text)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProjectMemory(RuntimeBase):
    __tablename__ = "project_memory"
    __table_args__ = (Index("ix_project_memory_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    keywords: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(RuntimeBase):
    """One domain event; no foreign keys, because events outlive runs."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_run_id_id", "run_id", "id"),
        Index("ix_events_card_id_id", "card_id", "id"),
        Index("ix_events_timestamp", "timestamp"),
        Index("ix_events_event_id", "event", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPK, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(
        String(100), default="system", server_default="system"
    )
    level: Mapped[str] = mapped_column(
        String(10), default="info", server_default="info"
    )
    run_id: Mapped[str | None] = mapped_column(String(32))
    card_id: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


class Sandbox(RuntimeBase):
    __tablename__ = "sandboxes"
    __table_args__ = (
        CheckConstraint(_in("status", SANDBOX_STATUSES), name="status"),
        Index("ix_sandboxes_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    rock_id: Mapped[str | None] = mapped_column(String(200))
    project_name: Mapped[str | None] = mapped_column(Text)
    tech_stack: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(
        String(20), default="creating", server_default="creating"
    )
    compose_project: Mapped[str] = mapped_column(String(120))
    api_port: Mapped[int | None] = mapped_column(Integer)
    frontend_port: Mapped[int | None] = mapped_column(Integer)
    database_port: Mapped[int | None] = mapped_column(Integer)
    admin_port: Mapped[int | None] = mapped_column(Integer)
    public_host: Mapped[str | None] = mapped_column(String(255))
    repo_full_name: Mapped[str | None] = mapped_column(String(255))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    source_ref: Mapped[str | None] = mapped_column(String(64))
    work_dir: Mapped[str | None] = mapped_column(Text)
    container_ids_json: Mapped[str | None] = mapped_column(Text)
    health_checks_passed: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )
    health_checks_failed: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )
    last_health_check: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
