"""The relay on SQLite and on a real PostgreSQL, with an SNS that refuses some entries for good: those are set
aside with the reason, the rest keep flowing, and no PublishBatch call is larger than SNS takes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.bus import Publisher
from shared.db import MAX_MESSAGE_BYTES, OutboxRow, UnitOfWork, create_tables, make_engine
from shared.outbox import OutboxRelay, count_set_aside
from shared.signing import Signer, private_key_from_secret
from tests.factories import model_registered


class Sns:
    """PublishBatch as SNS answers it: a call over 256 KiB in total raises; an entry naming `poison` is
    refused on its own (InvalidParameter, the sender's fault); `down` fails every entry (SNS's fault)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.down = False

    async def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict:
        total = sum(len(e["Message"].encode()) for e in PublishBatchRequestEntries)
        if total > MAX_MESSAGE_BYTES:
            raise ClientError({"Error": {"Code": "BatchRequestTooLong", "Message": "too long"}}, "PublishBatch")
        self.calls.append(total)
        ok, failed = [], []
        for e in PublishBatchRequestEntries:
            if self.down:
                failed.append({"Id": e["Id"], "Code": "InternalError", "SenderFault": False, "Message": "try later"})
            elif "poison" in e["Message"]:
                failed.append({"Id": e["Id"], "Code": "InvalidParameter", "SenderFault": True, "Message": "Invalid parameter"})
            else:
                ok.append({"Id": e["Id"], "MessageId": e["Id"]})
        return {"Successful": ok, "Failed": failed}


@pytest.fixture
async def sessionmaker(database_url):
    engine = make_engine(database_url)
    await create_tables(engine)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def publisher(sns: Sns) -> Publisher:
    return Publisher(sns, "arn:aws:sns:us-east-1:000000000000:events", Signer("registrar", private_key_from_secret(b"k")))


async def write(sessionmaker, events) -> None:
    async with UnitOfWork(sessionmaker) as uow:
        for event in events:
            uow.publish(event)
        await uow.commit()


async def publish_all(relay: OutboxRelay) -> None:
    while await relay.publish_pending():
        pass


async def rows(sessionmaker) -> dict[str, OutboxRow]:
    async with sessionmaker() as session:
        return {r.event_id: r for r in (await session.scalars(select(OutboxRow))).all()}


async def test_an_entry_the_bus_refuses_for_good_is_set_aside_and_the_rest_flow(sessionmaker):
    events = [model_registered(version=v, by="poison" if v == 2 else "ana") for v in range(1, 16)]
    await write(sessionmaker, events)
    sns = Sns()
    await publish_all(OutboxRelay(sessionmaker, publisher(sns), asyncio.Event()))
    stored = await rows(sessionmaker)
    poison = stored[events[1].event_id]
    assert poison.published_at is None and "InvalidParameter" in poison.set_aside_reason
    assert all(stored[e.event_id].published_at is not None for e in events if e is not events[1])
    assert await count_set_aside(sessionmaker) == 1


async def test_a_failure_that_is_not_the_senders_leaves_the_rows_pending(sessionmaker):
    event = model_registered()
    await write(sessionmaker, [event])
    sns = Sns()
    sns.down = True
    relay = OutboxRelay(sessionmaker, publisher(sns), asyncio.Event())
    assert await relay.publish_pending() == 0
    assert (await rows(sessionmaker))[event.event_id].set_aside_at is None
    sns.down = False
    assert await relay.publish_pending() == 1


async def test_batches_stay_under_what_publish_batch_takes_in_total(sessionmaker):
    big = {f"m{i:05d}": 0.5 for i in range(6000)}  # ~70 KB each: four of them are over 256 KiB
    events = [model_registered(version=v).model_copy(update={
        "payload": model_registered(version=v).payload.model_copy(update={"metrics": big})}) for v in range(1, 9)]
    await write(sessionmaker, events)
    sns = Sns()
    await publish_all(OutboxRelay(sessionmaker, publisher(sns), asyncio.Event()))
    assert all(r.published_at is not None for r in (await rows(sessionmaker)).values())
    assert len(sns.calls) >= 3 and max(sns.calls) <= MAX_MESSAGE_BYTES


async def test_the_unit_of_work_refuses_an_event_the_bus_could_not_carry_and_adds_nothing(sessionmaker):
    from shared.db import EventTooLarge

    small = model_registered()
    huge = small.model_copy(update={"payload": small.payload.model_copy(
        update={"metrics": {f"m{i:05d}": 0.5 for i in range(30_000)}})})
    async with UnitOfWork(sessionmaker) as uow:
        uow.publish(small)
        with pytest.raises(EventTooLarge, match="too large for the bus.*largest parts are metrics"):
            uow.publish(huge)
        await uow.commit()
    assert list(await rows(sessionmaker)) == [small.event_id]
