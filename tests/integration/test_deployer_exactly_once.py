"""Approvals for one stage arriving together, duplicated, on SQLite and on PostgreSQL: each approval is
deployed at most once, the newest version ends up live, and every other one is recorded as superseded."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from functools import partial

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.deployer.deploy import DeployOptions, on_approval_decided
from services.deployer.models import Deployment
from services.deployer.settings import DeployerSettings
from services.deployer.worker import DeploymentWorker
from shared.bus import Skip
from shared.db import OutboxRow, UnitOfWork, create_tables, make_engine
from shared.events import parse_event
from shared.runtime import Runtime
from tests.factories import approval_decided
from tests.inprocess import FakeSsm
from tests.unit.test_deployer import FakeTarget


class SlowTarget(FakeTarget):
    async def deploy(self, spec):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)  # long enough for the other approvals to arrive meanwhile
        return await super().deploy(spec)


async def test_concurrent_and_duplicated_approvals_for_one_stage(database_url):
    engine = make_engine(database_url)
    await create_tables(engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    ssm, target = FakeSsm(), SlowTarget()
    targets, wake, stop = {"dev": target}, asyncio.Event(), asyncio.Event()
    handler = partial(on_approval_decided, targets=targets, wake=wake)
    settings = DeployerSettings(database_url=database_url, namespace="it")
    runtime = Runtime(settings=settings, engine=engine, sessionmaker=sessionmaker, aws={})
    worker = DeploymentWorker(runtime, ssm, targets, DeployOptions(retry_seconds=0), wake, every=0.5)
    running = asyncio.create_task(worker.run(stop))

    async def deliver(event) -> None:  # type: ignore[no-untyped-def]
        for _ in range(5):  # as SQS does: a handler that failed (e.g. lost a race) gets the event again
            async with UnitOfWork(sessionmaker) as uow:
                try:
                    if await uow.already_processed(event):
                        return
                    await handler(event, uow)
                    uow.mark_processed(event)
                    await uow.commit()
                    return
                except Skip:
                    return
                except Exception:
                    await asyncio.sleep(0.05)
        raise AssertionError(f"{event.event_id} never handled")

    approvals = [approval_decided(version=v, approval_id=f"a{v}") for v in range(1, 9)]
    duplicates = approvals[::2] + [approval_decided(version=v, approval_id=f"a{v}") for v in (3, 8)]
    await asyncio.gather(*(deliver(e) for e in approvals + duplicates))
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the deployment worker runs what the handlers recorded
        async with sessionmaker() as session:
            open_ = await session.scalar(select(Deployment.id).where(Deployment.status.in_(("Pending", "Deploying"))).limit(1))
        if open_ is None:
            break
        assert asyncio.get_running_loop().time() < deadline, "deployments still open after 30 s"
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=10)

    async with sessionmaker() as session:
        deployments = list(await session.scalars(select(Deployment)))
        events = [parse_event(r.body) for r in await session.scalars(select(OutboxRow).order_by(OutboxRow.id))]
    await engine.dispose()
    assert len(deployments) == 8 and Counter(d.approval_id for d in deployments) == {f"a{v}": 1 for v in range(1, 9)}
    statuses = {d.version: d.status for d in deployments}
    assert statuses[8] == "Deployed" and set(statuses.values()) <= {"Deployed", "Superseded"}
    deployed_versions = [e.payload.version for e in events if e.event_type == "Deployed"]
    assert len(deployed_versions) == len(set(deployed_versions)) == len(target.deployed)  # none twice
    assert deployed_versions == sorted(deployed_versions) and deployed_versions[-1] == 8  # never backwards
    assert json.loads(ssm.parameters["/modelgate/fraud/dev/current"])["version"] == 8
