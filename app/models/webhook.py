"""Tables of the webhook database (SPEC DB-3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.models.base import UTCDateTime, new_metadata, utcnow
from app.models.runtime import _in

DELIVERY_STATUSES = ("accepted", "ignored", "duplicate", "failed", "dry_run")
CYCLE_STATUSES = ("active", "escalated", "rejected", "merged", "closed")
BUGFIX_STATUSES = ("active", "extended", "completed", "aborted")
OUTBOX_STATUSES = ("pending", "done", "failed", "dead")


class WebhookBase(DeclarativeBase):
    metadata = new_metadata()


class WebhookEvent(WebhookBase):
    """One delivery from Gitea, as received."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("delivery_id"),
        Index("idx_webhook_events_type_created", "event_type", "created_at"),
        Index("ix_webhook_events_body_sha256", "body_sha256"),
        Index("ix_webhook_events_pr_key", "pr_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    repo_full_name: Mapped[str | None] = mapped_column(String(255))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    pr_key: Mapped[str | None] = mapped_column(String(300))
    body_sha256: Mapped[str] = mapped_column(String(64))
    signature_ok: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PrReviewCycle(WebhookBase):
    __tablename__ = "pr_review_cycles"
    __table_args__ = (
        UniqueConstraint("pr_key"),
        UniqueConstraint("repo_full_name", "pr_number"),
        CheckConstraint(_in("status", CYCLE_STATUSES), name="status"),
        Index("idx_pr_review_cycles_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pr_key: Mapped[str] = mapped_column(String(300))
    repo_full_name: Mapped[str] = mapped_column(String(255))
    pr_number: Mapped[int] = mapped_column(Integer)
    cycle_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(
        String(16), default="active", server_default="active"
    )
    head_sha: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewFailure(WebhookBase):
    __tablename__ = "review_failures"
    __table_args__ = (
        Index("idx_review_failures_cycle", "pr_key", "cycle_number", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pr_key: Mapped[str] = mapped_column(
        String(300), ForeignKey("pr_review_cycles.pr_key")
    )
    cycle_number: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BugFixPhase(WebhookBase):
    __tablename__ = "bug_fix_phases"
    __table_args__ = (CheckConstraint(_in("status", BUGFIX_STATUSES), name="status"),)

    rock_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    data_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GiteaOutbox(WebhookBase):
    """A call owed to Gitea or to the runtime database (WH-9)."""

    __tablename__ = "gitea_outbox"
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_gitea_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_gitea_outbox_delivery_id", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(10), default="pending", server_default="pending"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
