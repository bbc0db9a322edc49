"""Alembic: one head per environment, up/down/up, models match, historical names."""

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from app.migrate import (
    MigrationError,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)

HISTORICAL_INDEXES = {
    "runtime": {
        "issues": {"idx_issues_build_status", "idx_issues_session_id"},
        "comments": {"idx_comments_issue_id"},
        "card_transactions": {"idx_card_transactions_card_id"},
    },
    "webhook": {
        "pr_review_cycles": {"idx_pr_review_cycles_status"},
        "review_failures": {"idx_review_failures_cycle"},
        "webhook_events": {"idx_webhook_events_type_created"},
    },
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("environment", ["runtime", "webhook"])
def test_each_environment_has_a_single_head(environment: str) -> None:
    assert (
        len(ScriptDirectory.from_config(alembic_config(environment)).get_heads()) == 1
    )


@pytest.mark.parametrize("environment", ["runtime", "webhook"])
def test_upgrade_downgrade_upgrade_and_models_match(
    database_urls, environment: str
) -> None:
    url = database_urls[environment]

    downgrade(environment, url)
    assert current_revision(url) is None
    assert _tables(url) <= {"alembic_version"}
    upgrade(environment, url)

    assert current_revision(url) == head_revision(environment)
    command.check(alembic_config(environment, url))


@pytest.mark.parametrize("environment", ["runtime", "webhook"])
def test_historical_index_names_exist(database_urls, environment: str) -> None:
    engine = create_engine(database_urls[environment], poolclass=NullPool)
    try:
        inspector = inspect(engine)
        for table, names in HISTORICAL_INDEXES[environment].items():
            assert names <= {index["name"] for index in inspector.get_indexes(table)}
    finally:
        engine.dispose()


def test_migrate_refuses_unversioned_tables(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE issues (id TEXT PRIMARY KEY)")
    engine.dispose()

    with pytest.raises(MigrationError, match="unversioned tables"):
        upgrade("runtime", url)

    assert _tables(url) == {"issues"}
