"""Create every table and index of the webhook database (DB-3).

Revision ID: 0001
Revises:
Create Date: 2026-12-03 13:37:45.715948
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "bug_fix_phases",
        sa.Column("rock_id", sa.String(length=200), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'extended', 'completed', 'aborted')",
            name=op.f("ck_bug_fix_phases_status"),
        ),
        sa.PrimaryKeyConstraint("rock_id", name=op.f("pk_bug_fix_phases")),
    )
    op.create_table(
        "gitea_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=100), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column(
            "status", sa.String(length=10), server_default="pending", nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gitea_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_gitea_outbox_dedupe_key")),
    )
    with op.batch_alter_table("gitea_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gitea_outbox_delivery_id", ["delivery_id"], unique=False
        )
        batch_op.create_index(
            "ix_gitea_outbox_status_next", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "pr_review_cycles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pr_key", sa.String(length=300), nullable=False),
        sa.Column("repo_full_name", sa.String(length=255), nullable=False),
        sa.Column("pr_number", sa.Integer(), nullable=False),
        sa.Column("cycle_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default="active", nullable=False
        ),
        sa.Column("head_sha", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'escalated', 'rejected', 'merged', 'closed')",
            name=op.f("ck_pr_review_cycles_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pr_review_cycles")),
        sa.UniqueConstraint("pr_key", name=op.f("uq_pr_review_cycles_pr_key")),
        sa.UniqueConstraint(
            "repo_full_name",
            "pr_number",
            name=op.f("uq_pr_review_cycles_repo_full_name_pr_number"),
        ),
    )
    with op.batch_alter_table("pr_review_cycles", schema=None) as batch_op:
        batch_op.create_index("idx_pr_review_cycles_status", ["status"], unique=False)

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("repo_full_name", sa.String(length=255), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("pr_key", sa.String(length=300), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature_ok", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_webhook_events_delivery_id")),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            "idx_webhook_events_type_created",
            ["event_type", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_webhook_events_body_sha256", ["body_sha256"], unique=False
        )
        batch_op.create_index("ix_webhook_events_pr_key", ["pr_key"], unique=False)

    op.create_table(
        "review_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pr_key", sa.String(length=300), nullable=False),
        sa.Column("cycle_number", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pr_key"],
            ["pr_review_cycles.pr_key"],
            name=op.f("fk_review_failures_pr_key_pr_review_cycles"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_failures")),
    )
    with op.batch_alter_table("review_failures", schema=None) as batch_op:
        batch_op.create_index(
            "idx_review_failures_cycle", ["pr_key", "cycle_number"], unique=True
        )


def downgrade() -> None:

    with op.batch_alter_table("review_failures", schema=None) as batch_op:
        batch_op.drop_index("idx_review_failures_cycle")

    op.drop_table("review_failures")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_pr_key")
        batch_op.drop_index("ix_webhook_events_body_sha256")
        batch_op.drop_index("idx_webhook_events_type_created")

    op.drop_table("webhook_events")
    with op.batch_alter_table("pr_review_cycles", schema=None) as batch_op:
        batch_op.drop_index("idx_pr_review_cycles_status")

    op.drop_table("pr_review_cycles")
    with op.batch_alter_table("gitea_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_gitea_outbox_status_next")
        batch_op.drop_index("ix_gitea_outbox_delivery_id")

    op.drop_table("gitea_outbox")
    op.drop_table("bug_fix_phases")
