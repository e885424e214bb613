"""The artifact-pin migrations (registrar, approver, deployer), on SQLite and PostgreSQL: rows from before
keep their data with no pin (NULL: such versions deploy unchecked), and each migration is undone cleanly."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from shared.db import make_engine
from shared.migrations import alembic_config

PINS = {
    "registrar": ("model_versions", "0007_comet_links", "0008_artifact_pins"),
    "approver": ("known_versions", "0004_request_audit", "0005_artifact_pins"),
    "deployer": ("deployments", "0002_request_audit", "0003_artifact_pins"),
}


@pytest.mark.parametrize("service", sorted(PINS))
async def test_the_pin_columns_come_and_go_with_their_migration(database_url, service):
    table, before, pinned = PINS[service]
    engine = make_engine(database_url)

    def migrate(revision: str, down: bool = False):  # type: ignore[no-untyped-def]
        def run(sync):  # type: ignore[no-untyped-def]
            (command.downgrade if down else command.upgrade)(alembic_config(service, sync), revision)
            return {c["name"]: c["nullable"] for c in inspect(sync).get_columns(table)}
        return run

    async with engine.begin() as conn:
        columns = await conn.run_sync(migrate(before))
        assert "artifact_digest" not in columns
        columns = await conn.run_sync(migrate(pinned))
        assert columns["artifact_digest"] is True and columns["artifact_version_id"] is True
        columns = await conn.run_sync(migrate(before, down=True))
        assert "artifact_digest" not in columns and "artifact_version_id" not in columns
    await engine.dispose()
