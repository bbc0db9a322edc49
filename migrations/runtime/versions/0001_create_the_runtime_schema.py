"""Create every table and index of the runtime database (DB-2).

Revision ID: 0001
Revises:
Create Date: 2026-12-03 13:37:45.648665
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
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column(
            "role", sa.String(length=100), server_default="system", nullable=False
        ),
        sa.Column("level", sa.String(length=10), server_default="info", nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("card_id", sa.String(length=200), nullable=True),
        sa.Column("data", sa.Text(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_card_id_id", ["card_id", "id"], unique=False)
        batch_op.create_index("ix_events_event_id", ["event", "id"], unique=False)
        batch_op.create_index("ix_events_run_id_id", ["run_id", "id"], unique=False)
        batch_op.create_index("ix_events_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "issues",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("epic_id", sa.String(length=200), nullable=True),
        sa.Column("parent_id", sa.String(length=200), nullable=True),
        sa.Column("seat", sa.String(length=100), nullable=False),
        sa.Column("summary", sa.Text(), server_default="Unnamed Unit", nullable=False),
        sa.Column("type", sa.String(length=20), server_default="issue", nullable=False),
        sa.Column(
            "priority", sa.String(length=20), server_default="2.0", nullable=False
        ),
        sa.Column("sprint", sa.String(length=20), nullable=True),
        sa.Column(
            "status", sa.String(length=32), server_default="ready", nullable=False
        ),
        sa.Column("wait_reason", sa.String(length=20), nullable=True),
        sa.Column("assignee", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("requirements", sa.Text(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("credits_spent", sa.Float(), server_default="0", nullable=False),
        sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default="3", nullable=False),
        sa.Column("verification_json", sa.Text(), nullable=True),
        sa.Column("metrics_json", sa.Text(), nullable=True),
        sa.Column("depends_on_json", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('ready', 'in_progress', 'blocked', 'waiting_for_developer', 'ready_for_testing', 'code_review', 'done', 'canceled', 'archived')",
            name=op.f("ck_issues_status"),
        ),
        sa.CheckConstraint(
            "wait_reason IS NULL OR wait_reason IN ('resource', 'dependency', 'review', 'input', 'system')",
            name=op.f("ck_issues_wait_reason"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issues")),
    )
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.create_index(
            "idx_issues_build_status", ["build_id", "status"], unique=False
        )
        batch_op.create_index("idx_issues_session_id", ["session_id"], unique=False)
        batch_op.create_index(
            "ix_issues_build_epic", ["build_id", "epic_id"], unique=False
        )
        batch_op.create_index("ix_issues_parent_id", ["parent_id"], unique=False)

    op.create_table(
        "project_memory",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_memory")),
    )
    with op.batch_alter_table("project_memory", schema=None) as batch_op:
        batch_op.create_index(
            "ix_project_memory_created_at", ["created_at"], unique=False
        )

    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("rock_id", sa.String(length=200), nullable=True),
        sa.Column("project_name", sa.Text(), nullable=True),
        sa.Column("tech_stack", sa.String(length=40), nullable=False),
        sa.Column(
            "status", sa.String(length=20), server_default="creating", nullable=False
        ),
        sa.Column("compose_project", sa.String(length=120), nullable=False),
        sa.Column("api_port", sa.Integer(), nullable=True),
        sa.Column("frontend_port", sa.Integer(), nullable=True),
        sa.Column("database_port", sa.Integer(), nullable=True),
        sa.Column("admin_port", sa.Integer(), nullable=True),
        sa.Column("public_host", sa.String(length=255), nullable=True),
        sa.Column("repo_full_name", sa.String(length=255), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("source_ref", sa.String(length=64), nullable=True),
        sa.Column("work_dir", sa.Text(), nullable=True),
        sa.Column("container_ids_json", sa.Text(), nullable=True),
        sa.Column(
            "health_checks_passed", sa.Integer(), server_default="0", nullable=False
        ),
        sa.Column(
            "health_checks_failed", sa.Integer(), server_default="0", nullable=False
        ),
        sa.Column("last_health_check", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('creating', 'running', 'unhealthy', 'stopping', 'stopped', 'deleted', 'failed')",
            name=op.f("ck_sandboxes_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandboxes")),
    )
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.create_index("ix_sandboxes_status", ["status"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column(
            "status", sa.String(length=20), server_default="queued", nullable=False
        ),
        sa.Column("task_input", sa.Text(), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("target_id", sa.String(length=200), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=True),
        sa.Column("builds_json", sa.Text(), server_default="[]", nullable=False),
        sa.Column("params_json", sa.Text(), server_default="{}", nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.String(length=100), nullable=True),
        sa.Column(
            "halt_requested",
            sa.Boolean(),
            server_default=sa.text("(false)"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'halted', 'interrupted')",
            name=op.f("ck_sessions_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sessions_build_status", ["build_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_sessions_status_queued_at", ["status", "queued_at"], unique=False
        )

    op.create_table(
        "card_transactions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("card_id", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["issues.id"],
            name=op.f("fk_card_transactions_card_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_transactions")),
    )
    with op.batch_alter_table("card_transactions", schema=None) as batch_op:
        batch_op.create_index(
            "idx_card_transactions_card_id", ["card_id"], unique=False
        )

    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("issue_id", sa.String(length=200), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_comments_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.create_index("idx_comments_issue_id", ["issue_id"], unique=False)

    op.create_table(
        "session_snapshots",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("log_history", sa.Text(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_snapshots_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_snapshots")),
    )
    op.create_table(
        "success_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("success_type", sa.String(length=40), nullable=False),
        sa.Column("artifact_ref", sa.Text(), nullable=True),
        sa.Column("human_ack", sa.Text(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_success_ledger_session_id_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_success_ledger")),
    )


def downgrade() -> None:

    op.drop_table("success_ledger")
    op.drop_table("session_snapshots")
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_index("idx_comments_issue_id")

    op.drop_table("comments")
    with op.batch_alter_table("card_transactions", schema=None) as batch_op:
        batch_op.drop_index("idx_card_transactions_card_id")

    op.drop_table("card_transactions")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_status_queued_at")
        batch_op.drop_index("ix_sessions_build_status")

    op.drop_table("sessions")
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.drop_index("ix_sandboxes_status")

    op.drop_table("sandboxes")
    with op.batch_alter_table("project_memory", schema=None) as batch_op:
        batch_op.drop_index("ix_project_memory_created_at")

    op.drop_table("project_memory")
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_index("ix_issues_parent_id")
        batch_op.drop_index("ix_issues_build_epic")
        batch_op.drop_index("idx_issues_session_id")
        batch_op.drop_index("idx_issues_build_status")

    op.drop_table("issues")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_timestamp")
        batch_op.drop_index("ix_events_run_id_id")
        batch_op.drop_index("ix_events_event_id")
        batch_op.drop_index("ix_events_card_id_id")

    op.drop_table("events")
