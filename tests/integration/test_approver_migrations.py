"""The approver's migrations, on SQLite and PostgreSQL: they make exactly the schema the models describe,
and bring a walking-skeleton database forward without losing its requests."""

from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from shared.db import make_engine
from shared.migrations import alembic_config, prepare_database, service_metadata


async def test_the_migrations_make_the_schema_the_models_describe(database_url):
    engine = make_engine(database_url)
    await prepare_database(engine, "approver")
    await prepare_database(engine, "approver")  # a second start changes nothing
    async with engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), service_metadata("approver"))
        )
    await engine.dispose()
    assert differences == []


async def test_a_skeleton_database_keeps_its_requests_and_votes(database_url):
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config("approver", sync), "0001_baseline"))
        await conn.execute(
            text(
                "INSERT INTO known_versions VALUES ('fraud/3', 'fraud', 3, 'ana', 's3://b/m', '{\"auc\": 0.9}', '{}', NULL)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO approval_requests VALUES ('r1', 'fraud/3', 'test', 'pending', 'test: 1 approver', 1, 'ml-leads',"
                " '2025-01-01 00:00:00+00:00', NULL)"
            )
        )
        await conn.execute(text("INSERT INTO votes (approval_id, approver, decision, at) VALUES ('r1', 'lee', 'Approved', '2025-01-02 00:00:00+00:00')"))
    await prepare_database(engine, "approver")
    async with engine.connect() as conn:
        request = (await conn.execute(text("SELECT group_name, version, status, checks, open_slot FROM approval_requests"))).one()
        vote = (await conn.execute(text("SELECT approver, via FROM votes"))).one()
    await engine.dispose()
    assert (request.group_name, request.version, request.status, request.open_slot) == ("fraud", 3, "pending", None)
    assert request.checks in ([], "[]")
    assert tuple(vote) == ("lee", "token")


async def test_approvers_become_principals_without_their_old_tokens(database_url):
    """Upgrading keeps each approver, groups and disabling included, as a viewer principal; the old unpeppered
    token hashes are not carried over (an admin issues new tokens)."""
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config("approver", sync), "0002_policies_auth_audit"))
        await conn.execute(text("INSERT INTO approvers (name, groups, token_hash, created_at, disabled_at) VALUES "
                                "('lee', '[\"ml-leads\"]', 'abc', '2025-01-01 00:00:00+00:00', NULL), "
                                "('kim', '[\"model-risk\"]', 'def', '2025-01-01 00:00:00+00:00', '2025-02-01 00:00:00+00:00')"))
    await prepare_database(engine, "approver")
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name, roles, groups, disabled_at FROM principals ORDER BY name"))).all()
        credentials = (await conn.execute(text("SELECT count(*) FROM credentials"))).scalar()
    await engine.dispose()
    def listed(value):  # JSON comes back parsed from PostgreSQL, as text from SQLite
        return value if isinstance(value, list) else json.loads(value)

    as_lists = [(r.name, listed(r.roles), listed(r.groups), r.disabled_at is not None) for r in rows]
    assert as_lists == [("kim", ["viewer"], ["model-risk"], True), ("lee", ["viewer"], ["ml-leads"], False)]
    assert credentials == 0
