"""The registrar's per-stage statuses tell the truth whatever order the events arrive in, and however often:
exactly one version reads Deployed per (group, stage), the others end Superseded, Retired or RolledBack."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import HANDLERS
from services.registrar.catalog import Registration, register
from services.registrar.models import ModelVersion
from shared.db import UnitOfWork, make_engine
from shared.events import Envelope, new_id, utcnow
from shared.migrations import prepare_database
from tests.factories import approval_decided, deployed, deployment_started, deployment_superseded

T0 = utcnow()


@pytest.fixture
async def sessionmaker(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/registrar.db")
    await prepare_database(engine, "registrar")
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def at(event: Envelope, second: float) -> Envelope:
    return event.model_copy(update={"occurred_at": T0 + timedelta(seconds=second)})


async def register_versions(sessionmaker, group: str, count: int) -> None:
    for _ in range(count):
        async with UnitOfWork(sessionmaker) as uow:
            await register(uow, group, Registration(artifact_uri="s3://b/m.bin", registered_by="ana"))
            await uow.commit()


async def deliver(sessionmaker, event: Envelope) -> None:
    async with UnitOfWork(sessionmaker) as uow:
        await HANDLERS[event.event_type](event, uow)
        await uow.commit()


async def stages(sessionmaker, group: str, count: int, stage: str = "dev") -> dict[int, tuple]:
    """version -> (status, replaced_by, superseded_by) in `stage`, and the version's approval status."""
    async with sessionmaker() as session:
        found = {}
        for number in range(1, count + 1):
            v = await session.get(ModelVersion, f"{group}/{number}")
            d = v.stages.get(stage, {})
            found[number] = (d.get("status"), d.get("replaced_by"), d.get("superseded_by"), v.approval_status)
        return found


def supersede_wave(group: str) -> list[Envelope]:
    """Three versions approved for dev at once: the deployer supersedes 1 and 2 and deploys 3."""
    return [
        at(approval_decided(group, 1, approval_id=f"{group}-a1"), 1),
        at(approval_decided(group, 2, approval_id=f"{group}-a2"), 2),
        at(approval_decided(group, 3, approval_id=f"{group}-a3"), 3),
        at(deployment_superseded(group, 1, by=3, deployment_id=f"{group}-d1", approval_id=f"{group}-a1"), 10),
        at(deployment_superseded(group, 2, by=3, deployment_id=f"{group}-d2", approval_id=f"{group}-a2"), 10),
        at(deployment_started(group, 3, deployment_id=f"{group}-d3", approval_id=f"{group}-a3"), 11),
        at(deployed(group, 3, deployment_id=f"{group}-d3"), 12),
    ]


def promotions_and_a_rollback(group: str) -> list[Envelope]:
    """1 deployed, replaced by 2, replaced by 3, then the stage rolled back from 3 to 2."""
    events = []
    for n in (1, 2, 3):
        events += [
            at(approval_decided(group, n, approval_id=f"{group}-a{n}"), 10 * n),
            at(deployment_started(group, n, deployment_id=f"{group}-d{n}", approval_id=f"{group}-a{n}"), 10 * n + 1),
            at(deployed(group, n, deployment_id=f"{group}-d{n}", previous=n - 1 or None), 10 * n + 2),
        ]
    return events + [
        at(deployment_started(group, 2, deployment_id=f"{group}-d4", rollback=True), 40),
        at(deployed(group, 2, deployment_id=f"{group}-d4", previous=3, rollback=True), 41),
    ]


SUPERSEDED_WAVE = {
    1: ("Superseded", None, "{g}/3", "Approved"),
    2: ("Superseded", None, "{g}/3", "Approved"),
    3: ("Deployed", None, None, "Approved"),
}
AFTER_ROLLBACK = {
    1: ("Retired", "{g}/2", None, "Approved"),
    2: ("Deployed", None, None, "Approved"),
    3: ("RolledBack", "{g}/2", None, "Approved"),
}


def expected(table: dict[int, tuple], group: str) -> dict[int, tuple]:
    return {n: tuple(x.format(g=group) if isinstance(x, str) else x for x in row) for n, row in table.items()}


@pytest.mark.parametrize("story, outcome", [(supersede_wave, SUPERSEDED_WAVE), (promotions_and_a_rollback, AFTER_ROLLBACK)])
async def test_the_same_events_in_any_order_end_in_the_same_stages(sessionmaker, story, outcome):
    rng = random.Random(17)
    orders = [list(range(len(story("x"))))]
    orders.append(orders[0][::-1])
    for _ in range(30):
        orders.append(rng.sample(orders[0], len(orders[0])))
    for i, order in enumerate(orders):
        group = f"g{i}"
        await register_versions(sessionmaker, group, 3)
        events = story(group)
        for index in order:
            await deliver(sessionmaker, events[index])
        assert await stages(sessionmaker, group, 3) == expected(outcome, group), f"order {order}"


async def test_a_repeated_event_changes_nothing(sessionmaker):
    await register_versions(sessionmaker, "fraud", 3)
    events = promotions_and_a_rollback("fraud")
    for event in events:
        await deliver(sessionmaker, event)
    async with sessionmaker() as session:
        before = {n: (await session.get(ModelVersion, f"fraud/{n}")).stages for n in (1, 2, 3)}
    for event in reversed(events):  # the same facts again (as a producer's retry would send them: new event ids)
        await deliver(sessionmaker, event.model_copy(update={"event_id": new_id()}))
    async with sessionmaker() as session:
        after = {n: (await session.get(ModelVersion, f"fraud/{n}")).stages for n in (1, 2, 3)}
    assert after == before


async def test_a_late_deployment_started_never_undoes_deployed_even_when_its_clock_runs_ahead(sessionmaker):
    await register_versions(sessionmaker, "fraud", 1)
    await deliver(sessionmaker, at(deployed("fraud", 1, deployment_id="d1"), 5))
    await deliver(sessionmaker, at(deployment_started("fraud", 1, deployment_id="d1"), 9))  # another deployer host
    assert (await stages(sessionmaker, "fraud", 1))[1][0] == "Deployed"


async def test_a_superseded_deployment_ends_superseded_even_when_its_approval_arrives_later(sessionmaker):
    await register_versions(sessionmaker, "fraud", 1)
    await deliver(sessionmaker, at(deployment_superseded("fraud", 1, by=2), 5))
    await deliver(sessionmaker, at(approval_decided("fraud", 1), 8))  # the approver's clock ahead of the deployer's
    status, _, by, approval = (await stages(sessionmaker, "fraud", 1))[1]
    assert (status, by, approval) == ("Superseded", "fraud/2", "Approved")


async def test_a_deployed_without_its_previous_version_still_retires_what_read_deployed(sessionmaker):
    await register_versions(sessionmaker, "fraud", 2)
    await deliver(sessionmaker, at(deployed("fraud", 1, deployment_id="d1"), 1))
    await deliver(sessionmaker, at(deployed("fraud", 2, deployment_id="d2"), 2))  # previous_model_version_id unknown
    found = await stages(sessionmaker, "fraud", 2)
    assert found[1][:2] == ("Retired", "fraud/2") and found[2][0] == "Deployed"


async def test_a_rollback_overtaken_by_a_newer_approval_leaves_the_version_retired(sessionmaker):
    await register_versions(sessionmaker, "fraud", 2)
    for event in promotions_and_a_rollback("fraud")[:6]:  # 1 then 2 deployed
        await deliver(sessionmaker, event)
    await deliver(sessionmaker, at(deployment_superseded("fraud", 1, by=3, deployment_id="d9", approval_id=None,
                                                         rollback=True), 30))
    assert (await stages(sessionmaker, "fraud", 2))[1][:2] == ("Retired", "fraud/2")


async def test_the_approval_is_remembered_through_deploying_and_deployed(sessionmaker):
    await register_versions(sessionmaker, "fraud", 1)
    for event in promotions_and_a_rollback("fraud")[:3]:
        await deliver(sessionmaker, event)
    async with sessionmaker() as session:
        details = (await session.get(ModelVersion, "fraud/1")).stages["dev"]
    assert details["status"] == "Deployed" and details["decided_by"] == ["policy"]
    assert details["approval_id"] == "fraud-a1" and details["deployment_id"] == "fraud-d1"
