"""Deployed events of one group handled at the same time, on SQLite and PostgreSQL: each retires what served
before without deadlocking another, and exactly one version ends Deployed."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import HANDLERS
from services.registrar.catalog import Registration, register
from services.registrar.models import ModelVersion
from shared.db import UnitOfWork, make_engine
from shared.migrations import prepare_database
from tests.factories import deployed


async def test_concurrent_deployed_events_of_one_group_leave_exactly_one_deployed(database_url):
    engine = make_engine(database_url)
    await prepare_database(engine, "registrar")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        for _ in range(12):
            async with UnitOfWork(sessionmaker) as uow:
                await register(uow, "surge", Registration(artifact_uri="s3://b/m.bin", registered_by="ana"))
                await uow.commit()
        events = [deployed("surge", n, deployment_id=f"d{n}", previous=n - 1 or None) for n in range(1, 13)]
        random.Random(3).shuffle(events)

        async def deliver(event) -> None:  # type: ignore[no-untyped-def]
            async with UnitOfWork(sessionmaker) as uow:
                await HANDLERS["Deployed"](event, uow)
                await uow.commit()

        await asyncio.wait_for(asyncio.gather(*(deliver(e) for e in events)), timeout=30)
        async with sessionmaker() as session:
            statuses = {n: (await session.get(ModelVersion, f"surge/{n}")).stages["dev"] for n in range(1, 13)}
        assert [n for n, d in statuses.items() if d["status"] == "Deployed"] == [12]
        assert all(d["status"] == "Retired" and d["replaced_by"] == f"surge/{n + 1}" for n, d in statuses.items() if n < 12)
    finally:
        await engine.dispose()
