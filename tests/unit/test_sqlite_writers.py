"""SQLite writers of one process take turns per transaction; readers never wait; nothing deadlocks."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.db import ProcessedEvent, UnitOfWork, create_tables, make_engine, reading
from shared.events import new_id


async def _engine(tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/writers.db")
    await create_tables(engine)
    return engine, async_sessionmaker(reading(engine), expire_on_commit=False)


async def _count(sessionmaker) -> int:  # type: ignore[no-untyped-def]
    async with sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(ProcessedEvent))


async def test_many_concurrent_units_of_work_all_commit(tmp_path):
    engine, sessionmaker = await _engine(tmp_path)

    async def write() -> None:
        async with UnitOfWork(sessionmaker) as uow:
            await uow.session.get(ProcessedEvent, "nothing")  # read, then write: the upgrade that can fail
            uow.session.add(ProcessedEvent(event_id=new_id(), event_type="T"))
            await asyncio.sleep(0)
            await uow.commit()

    await asyncio.gather(*(write() for _ in range(50)))
    assert await _count(sessionmaker) == 50
    await engine.dispose()


async def test_a_unit_of_work_waiting_between_transactions_does_not_hold_up_others(tmp_path):
    engine, sessionmaker = await _engine(tmp_path)
    committed, others_done = asyncio.Event(), asyncio.Event()

    async def slow_sender() -> None:  # like the notifier: commit a claim, then wait on a slow network call
        async with UnitOfWork(sessionmaker) as uow:
            uow.session.add(ProcessedEvent(event_id=new_id(), event_type="claim"))
            await uow.commit()
            committed.set()
            await asyncio.wait_for(others_done.wait(), timeout=10)
            uow.session.add(ProcessedEvent(event_id=new_id(), event_type="sent"))
            await uow.commit()

    async def other() -> None:
        await committed.wait()
        async with UnitOfWork(sessionmaker) as uow:
            uow.session.add(ProcessedEvent(event_id=new_id(), event_type="other"))
            await uow.commit()
        others_done.set()

    await asyncio.gather(slow_sender(), other())
    assert await _count(sessionmaker) == 3
    await engine.dispose()


async def test_readers_do_not_wait_for_an_open_write_transaction(tmp_path):
    engine, sessionmaker = await _engine(tmp_path)
    async with UnitOfWork(sessionmaker) as uow:
        uow.session.add(ProcessedEvent(event_id=new_id(), event_type="T"))
        await uow.session.flush()  # the write transaction is open and holds the write lock
        assert await asyncio.wait_for(_count(sessionmaker), timeout=2) == 0
        await uow.commit()
    assert await _count(sessionmaker) == 1
    await engine.dispose()


async def test_a_cancelled_writer_gives_its_turn_back(tmp_path):
    engine, sessionmaker = await _engine(tmp_path)
    inside = asyncio.Event()

    async def stuck() -> None:
        async with UnitOfWork(sessionmaker) as uow:
            uow.session.add(ProcessedEvent(event_id=new_id(), event_type="T"))
            await uow.session.flush()
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    async with UnitOfWork(sessionmaker) as uow:
        uow.session.add(ProcessedEvent(event_id=new_id(), event_type="T"))
        await asyncio.wait_for(uow.commit(), timeout=5)
    assert await _count(sessionmaker) == 1
    await engine.dispose()
