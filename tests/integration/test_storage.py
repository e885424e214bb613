"""The unit of work, outbox and idempotency ledger on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.bus import Outgoing
from shared.db import UnitOfWork, create_tables, make_engine
from shared.outbox import OutboxRelay
from tests.factories import model_registered


class RecordingPublisher:
    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.sent: list[str] = []
        self.refuse = refuse

    async def publish_messages(self, messages: list[Outgoing]) -> set[str]:
        accepted = {m.event_id for m in messages if m.event_id not in self.refuse}
        self.sent.extend(m.event_id for m in messages if m.event_id in accepted)
        return accepted


@pytest.fixture
async def sessionmaker(database_url):
    engine = make_engine(database_url)
    await create_tables(engine)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def test_the_outbox_publishes_committed_events_once_in_order(sessionmaker):
    events = [model_registered(version=v) for v in range(1, 13)]
    for event in events:
        async with UnitOfWork(sessionmaker) as uow:
            uow.publish(event)
            await uow.commit()
    publisher = RecordingPublisher()
    relay = OutboxRelay(sessionmaker, publisher, asyncio.Event())
    assert await relay.publish_pending() == 10
    assert await relay.publish_pending() == 2
    assert await relay.publish_pending() == 0
    assert publisher.sent == [e.event_id for e in events]


async def test_an_event_the_topic_refused_stays_in_the_outbox_for_the_next_round(sessionmaker):
    first, second = model_registered(version=1), model_registered(version=2)
    async with UnitOfWork(sessionmaker) as uow:
        uow.publish(first)
        uow.publish(second)
        await uow.commit()
    publisher = RecordingPublisher(refuse={second.event_id})
    relay = OutboxRelay(sessionmaker, publisher, asyncio.Event())
    assert await relay.publish_pending() == 1
    publisher.refuse = set()
    assert await relay.publish_pending() == 1
    assert publisher.sent == [first.event_id, second.event_id]


async def test_a_rolled_back_unit_of_work_leaves_no_event_and_no_mark(sessionmaker):
    event = model_registered()
    async with UnitOfWork(sessionmaker) as uow:
        uow.publish(event)
        uow.mark_processed(event)
    async with UnitOfWork(sessionmaker) as uow:
        assert not await uow.already_processed(event)
    assert await OutboxRelay(sessionmaker, RecordingPublisher(), asyncio.Event()).publish_pending() == 0


async def test_two_relays_on_one_database_publish_every_event(sessionmaker):
    """PostgreSQL: each relay claims its rows, so no event goes out twice. SQLite (one process per file is the
    supported set-up) publishes outside the transaction, so two relays may both send a row: at least once,
    which consumers absorb by deduplicating on event_id."""
    events = [model_registered(version=v) for v in range(1, 41)]
    async with UnitOfWork(sessionmaker) as uow:
        for event in events:
            uow.publish(event)
        await uow.commit()
    publisher = RecordingPublisher()
    relays = [OutboxRelay(sessionmaker, publisher, asyncio.Event()) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.publish_pending():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    assert set(publisher.sent) == {e.event_id for e in events}
    if sessionmaker.kw["bind"].dialect.name == "postgresql":
        assert sorted(publisher.sent) == sorted(e.event_id for e in events)
