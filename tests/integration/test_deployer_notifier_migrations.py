"""The deployer's and the notifier's migrations, on SQLite and PostgreSQL: they make exactly the schema the
models describe, and adopt a database that create_all made before these services had migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from shared.db import make_engine
from shared.migrations import prepare_database, service_metadata

SERVICES = ("deployer", "notifier")
HEADS = {"deployer": "0007_rollouts", "notifier": "0004_wedge_outbox_set_aside"}


@pytest.mark.parametrize("service", SERVICES)
async def test_the_migrations_make_the_schema_the_models_describe(database_url, service):
    engine = make_engine(database_url)
    await prepare_database(engine, service)
    await prepare_database(engine, service)  # a second start changes nothing
    async with engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), service_metadata(service))
        )
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    await engine.dispose()
    assert differences == [] and version == HEADS[service]


@pytest.mark.parametrize("service", SERVICES)
async def test_a_database_create_all_made_keeps_its_rows_and_is_taken_as_the_baseline(database_url, service):
    engine = make_engine(database_url)
    async with engine.begin() as conn:  # what a release without migrations left behind
        await conn.run_sync(service_metadata(service).create_all)
        await conn.execute(text("INSERT INTO processed_events VALUES ('e1', 'Deployed', '2026-01-01 00:00:00+00:00')"))
    await prepare_database(engine, service)
    async with engine.connect() as conn:
        kept = await conn.scalar(text("SELECT event_id FROM processed_events"))
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    assert kept == "e1" and version == HEADS[service] and "alembic_version" in tables
