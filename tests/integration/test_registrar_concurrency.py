"""Two registrar processes registering into one new group at the same time get versions 1..N, each once."""

from __future__ import annotations

import asyncio
import multiprocessing

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.catalog import Registration, register
from services.registrar.models import HistoryEntry, ModelGroup, ModelVersion
from shared.db import OutboxRow, UnitOfWork, make_engine
from shared.migrations import prepare_database

PER_PROCESS = 40
TASKS_PER_PROCESS = 4


def register_many(database_url: str, group: str, start: multiprocessing.synchronize.Barrier) -> list[int]:
    """One registrar process: migrates (as a starting service does), waits for the other, then registers."""

    async def run() -> list[int]:
        engine = make_engine(database_url)
        await prepare_database(engine, "registrar")
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        start.wait(timeout=120)  # both processes are ready: from here they race

        async def worker(count: int) -> list[int]:
            numbers = []
            for _ in range(count):
                async with UnitOfWork(sessionmaker) as uow:
                    version = await register(uow, group, Registration(artifact_uri="s3://b/m", registered_by="ana"))
                    await uow.commit()
                numbers.append(version.version)
            return numbers

        results = await asyncio.gather(*(worker(PER_PROCESS // TASKS_PER_PROCESS) for _ in range(TASKS_PER_PROCESS)))
        await engine.dispose()
        return [n for numbers in results for n in numbers]

    return asyncio.run(run())


async def test_two_processes_number_versions_without_gap_or_duplicate(database_url):
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(2) as pool:
        start = manager.Barrier(2)
        pending = [pool.apply_async(register_many, (database_url, "fraud", start)) for _ in range(2)]
        numbers = await asyncio.to_thread(lambda: [n for p in pending for n in p.get(timeout=240)])
    assert sorted(numbers) == list(range(1, 2 * PER_PROCESS + 1))

    engine = make_engine(database_url)
    async with async_sessionmaker(engine)() as session:
        stored = (await session.scalars(select(ModelVersion.version).order_by(ModelVersion.version))).all()
        assert stored == list(range(1, 2 * PER_PROCESS + 1))
        assert (await session.get(ModelGroup, "fraud")).latest_version == 2 * PER_PROCESS
        for table in (HistoryEntry, OutboxRow):  # one ModelRegistered each, recorded and announced
            assert await session.scalar(select(func.count()).select_from(table)) == 2 * PER_PROCESS
    await engine.dispose()
