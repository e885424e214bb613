"""The registrar's Alembic migrations on SQLite and PostgreSQL, and the fallback for services without any."""

from __future__ import annotations

import asyncio
import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.models import ModelVersion
from shared.db import make_engine
from shared.migrations import alembic_config, prepare_database, service_metadata


async def test_migrations_build_exactly_the_schema_the_models_describe(database_url):
    engine = make_engine(database_url)
    await prepare_database(engine, "registrar")
    await prepare_database(engine, "registrar")  # a second start changes nothing
    async with engine.connect() as conn:
        drift = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), service_metadata("registrar"))
        )
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    await engine.dispose()
    assert drift == [] and version == "0012_versions_by_group_newest"


async def test_idempotency_keys_made_before_they_were_per_principal_go_to_their_registrant(database_url):
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config("registrar", c), "0005_request_audit"))
        now = "2026-01-02 03:04:05+00:00"
        await conn.execute(text(f"INSERT INTO model_groups (name, description, latest_version, created_at)"
                                f" VALUES ('fraud', '', 1, '{now}')"))
        await conn.execute(text(
            "INSERT INTO model_versions (id, group_name, version, artifact_uri, registered_by, source, metrics, params,"
            " tags, model_card, lineage, approval_status, stages, created_at)"
            " VALUES ('fraud/1', 'fraud', 1, 's3://b/m', 'ci-bot', 'manual', '{}', '{}', '{}', '{}', '{}',"
            f" 'PendingManualApproval', '{{}}', '{now}')"))
        await conn.execute(text(f"INSERT INTO idempotency_keys VALUES ('job-42', 'h', 'fraud/1', '{now}')"))
    await prepare_database(engine, "registrar")
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT principal, key, model_version_id FROM idempotency_keys"))).all()
        assert [tuple(r) for r in rows] == [("ci-bot", "job-42", "fraud/1")]
        await conn.execute(text(f"INSERT INTO idempotency_keys VALUES ('ana', 'job-42', 'h2', 'fraud/1', '{now}')"))
        await conn.run_sync(lambda c: command.downgrade(alembic_config("registrar", c), "0005_request_audit"))
        assert (await conn.execute(text("SELECT key FROM idempotency_keys"))).scalars().all() == ["job-42"]
        await conn.run_sync(lambda c: command.upgrade(alembic_config("registrar", c), "head"))
        assert (await conn.execute(text("SELECT principal FROM idempotency_keys"))).scalars().all() == ["ci-bot"]
        await conn.commit()
    await engine.dispose()


async def test_a_database_made_before_migrations_is_upgraded_with_its_data(database_url):
    """The walking skeleton created its tables with create_all and kept metrics, tags and stages as JSON."""
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config("registrar", c), "0001_baseline"))
        await conn.execute(text("DROP TABLE alembic_version"))
        now = "2026-01-02 03:04:05+00:00"
        await conn.execute(text(f"INSERT INTO model_groups VALUES ('fraud', '', 1, '{now}')"))
        stages = {"dev": {"status": "Deployed", "at": "2026-01-02T03:04:06+00:00", "rollback": False}}
        await conn.execute(
            text(
                "INSERT INTO model_versions VALUES ('fraud/1', 'fraud', 1, 's3://b/m', 'ana', 'manual', NULL, :metrics,"
                f" '{{}}', :tags, '{{}}', '{{}}', 'Approved', :stages, '{now}')"
            ),
            {"metrics": json.dumps({"auc": 0.93}), "tags": json.dumps({"team": "risk"}), "stages": json.dumps(stages)},
        )
    await prepare_database(engine, "registrar")
    async with async_sessionmaker(engine)() as session:
        version = await session.get(ModelVersion, "fraud/1")
        assert version.metrics == {"auc": 0.93} and version.tags == {"team": "risk"}
        assert version.stages == {"dev": {"status": "Deployed", "at": "2026-01-02T03:04:06+00:00", "rollback": False}}
        assert version.description == "" and version.meta == {}
    await engine.dispose()


async def test_two_processes_starting_at_once_migrate_once(database_url):
    engines = [make_engine(database_url) for _ in range(2)]
    await asyncio.gather(*(prepare_database(engine, "registrar") for engine in engines))
    async with engines[0].connect() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM alembic_version"))) == 1
    for engine in engines:
        await engine.dispose()


async def test_a_service_without_migrations_gets_its_tables_from_the_models(database_url):
    import services.deployer.models  # noqa: F401  (registers the deployer's tables)

    engine = make_engine(database_url)
    await prepare_database(engine, "a-service-without-migrations")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert {"outbox", "processed_events", "deployments"} <= tables and "alembic_version" not in tables
