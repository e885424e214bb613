"""The outbox set-aside migrations (every service has an outbox), on SQLite and PostgreSQL: pending and
published rows from before keep their state (set_aside_at NULL), and each migration is undone cleanly."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from shared.db import make_engine
from shared.migrations import alembic_config

REVISIONS = {
    "registrar": ("0008_artifact_pins", "0009_wedge_outbox_set_aside"),
    "approver": ("0005_artifact_pins", "0006_wedge_outbox_set_aside"),
    "deployer": ("0003_artifact_pins", "0004_wedge_outbox_set_aside"),
    "notifier": ("0003_request_audit", "0004_wedge_outbox_set_aside"),
}


@pytest.mark.parametrize("service", sorted(REVISIONS))
async def test_the_set_aside_columns_come_and_go_with_their_migration(database_url, service):
    before, after = REVISIONS[service]
    engine = make_engine(database_url)

    def migrate(revision: str, down: bool = False):  # type: ignore[no-untyped-def]
        def run(sync):  # type: ignore[no-untyped-def]
            (command.downgrade if down else command.upgrade)(alembic_config(service, sync), revision)
            return {c["name"] for c in inspect(sync).get_columns("outbox")}
        return run

    async with engine.begin() as conn:
        assert "set_aside_at" not in await conn.run_sync(migrate(before))
        await conn.execute(text("INSERT INTO outbox (event_id, event_type, body, created_at) "
                                "VALUES ('e1', 'ModelRegistered', '{}', CURRENT_TIMESTAMP)"))
        assert {"set_aside_at", "set_aside_reason"} <= await conn.run_sync(migrate(after))
        assert (await conn.execute(text("SELECT set_aside_at, set_aside_reason FROM outbox"))).all() == [(None, None)]
        assert "set_aside_at" not in await conn.run_sync(migrate(before, down=True))
    await engine.dispose()
