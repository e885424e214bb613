"""The deployer's promises, without a network: each approval deploys once, the newest version wins,
failures are announced after bounded retries, rollback walks back through what was live."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.deployer.deploy import (
    DeployOptions,
    RollbackRefused,
    on_approval_decided,
    request_rollback,
    run_stage,
)
from services.deployer.models import Deployment, Stage
from services.deployer.targets import DeployError, DeploySpec, Target
from shared.bus import Skip
from shared.db import OutboxRow, UnitOfWork, create_tables, make_engine
from shared.events import parse_event, utcnow
from tests.factories import approval_decided
from tests.inprocess import FakeSsm

FAST = DeployOptions(attempts=3, retry_seconds=0, lease_seconds=15)


class FakeTarget(Target):
    name = "local"

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.deployed: list[str] = []
        self.retired: list[str] = []

    async def deploy(self, spec: DeploySpec) -> str:
        if self.failures:
            self.failures -= 1
            raise DeployError(f"{spec.model_version_id} would not start")
        self.deployed.append(spec.model_version_id)
        return f"http://127.0.0.1/{spec.deployment_id}"

    async def retire(self, spec: DeploySpec) -> None:
        self.retired.append(spec.model_version_id)


class Deployer:
    """The deployer's handler and tables on an SQLite file, handled the way the consumer loop does."""

    def __init__(self, sessionmaker: async_sessionmaker, target: FakeTarget):  # type: ignore[type-arg]
        self.sessionmaker = sessionmaker
        self.ssm = FakeSsm()
        self.target = target
        self.targets = {"dev": target}
        self.handler = partial(on_approval_decided, ssm=self.ssm, targets=self.targets, options=FAST)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def deliver(self, event) -> str:  # type: ignore[no-untyped-def]
        async with self.uow() as uow:
            if await uow.already_processed(event):
                return "duplicate"
            try:
                await self.handler(event, uow)
            except Skip:
                return "skipped"
            uow.mark_processed(event)
            await uow.commit()
        return "handled"

    async def events(self) -> list:  # type: ignore[type-arg]
        async with self.sessionmaker() as session:
            return [parse_event(r.body) for r in await session.scalars(select(OutboxRow).order_by(OutboxRow.id))]

    async def deployments(self) -> list[Deployment]:
        async with self.sessionmaker() as session:
            return list(await session.scalars(select(Deployment).order_by(Deployment.created_at)))

    def pointer(self, stage: str = "dev") -> dict:
        return json.loads(self.ssm.parameters[f"/modelgate/fraud/{stage}/current"])


@pytest.fixture
async def deployer(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/deployer.db")
    await create_tables(engine)
    yield Deployer(async_sessionmaker(engine, expire_on_commit=False), FakeTarget())
    await engine.dispose()


async def test_an_approval_deploys_writes_the_pointer_and_announces_deployed(deployer):
    assert await deployer.deliver(approval_decided(version=1, approval_id="a1")) == "handled"
    (event,) = await deployer.events()
    assert event.event_type == "Deployed" and event.payload.endpoint_url.startswith("http://127.0.0.1/")
    assert event.payload.previous_model_version_id is None and event.payload.target == "local"
    pointer = deployer.pointer()
    assert pointer["model_version_id"] == "fraud/1" and pointer["endpoint_url"] == event.payload.endpoint_url
    assert set(pointer) >= {"model_version_id", "version", "artifact_uri", "deployed_at"}


async def test_a_duplicated_or_redelivered_approval_deploys_once(deployer):
    approval = approval_decided(version=1, approval_id="a1")
    same_approval_new_event = approval_decided(version=1, approval_id="a1")
    assert await deployer.deliver(approval) == "handled"
    assert await deployer.deliver(approval) == "duplicate"
    assert await deployer.deliver(same_approval_new_event) == "skipped"
    assert deployer.target.deployed == ["fraud/1"] and deployer.ssm.writes == 1
    assert [e.event_type for e in await deployer.events()] == ["Deployed"]


async def test_an_older_approval_arriving_after_a_newer_one_is_recorded_as_superseded(deployer):
    await deployer.deliver(approval_decided(version=2, approval_id="a2"))
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    statuses = {d.model_version_id: d.status for d in await deployer.deployments()}
    assert statuses == {"fraud/2": "Deployed", "fraud/1": "Superseded"}
    assert deployer.target.deployed == ["fraud/2"] and deployer.pointer()["model_version_id"] == "fraud/2"
    superseded = next(d for d in await deployer.deployments() if d.status == "Superseded")
    assert "fraud/2" in superseded.reason


async def test_two_approvals_waiting_together_deploy_only_the_newer_version(deployer):
    from services.deployer.deploy import record_approval

    for version in (1, 2):  # both recorded before the stage is free to run them
        async with deployer.uow() as uow:
            await record_approval(uow, approval_decided(version=version, approval_id=f"a{version}"), "local")
            await uow.commit()
    async with deployer.uow() as uow:
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
    statuses = {d.model_version_id: d.status for d in await deployer.deployments()}
    assert statuses == {"fraud/1": "Superseded", "fraud/2": "Deployed"}
    assert [e.payload.model_version_id for e in await deployer.events()] == ["fraud/2"]


async def test_a_target_failing_every_try_is_announced_as_deployment_failed_and_the_stage_keeps_its_version(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    deployer.target.failures = 3
    await deployer.deliver(approval_decided(version=2, approval_id="a2"))
    failed = (await deployer.events())[-1]
    assert failed.event_type == "DeploymentFailed"
    assert failed.payload.attempts == 3 and "fraud/2 would not start" in failed.payload.reason
    assert deployer.pointer()["model_version_id"] == "fraud/1"
    assert deployer.target.retired == ["fraud/2"]  # what the failed tries left is cleaned up


async def test_a_target_failing_once_succeeds_on_a_retry(deployer):
    deployer.target.failures = 1
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    (deployed,) = await deployer.events()
    assert deployed.event_type == "Deployed"
    assert (await deployer.deployments())[0].attempts == 2


async def test_a_new_version_retires_the_one_it_replaces(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    await deployer.deliver(approval_decided(version=2, approval_id="a2"))
    second = (await deployer.events())[-1]
    assert second.payload.previous_model_version_id == "fraud/1" and second.payload.previous_version == 1
    assert deployer.target.retired == ["fraud/1"]


async def rollback(deployer: Deployer) -> Deployment:
    async with deployer.uow() as uow:
        deployment = await request_rollback(uow, "fraud", "dev", deployer.targets, "lee", "auc dropped")
        await uow.commit()
    async with deployer.uow() as uow:
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
    return deployment


async def test_rollback_walks_back_through_what_was_live_then_refuses(deployer):
    for version in (1, 2, 3):
        await deployer.deliver(approval_decided(version=version, approval_id=f"a{version}"))
    await rollback(deployer)
    back = (await deployer.events())[-1]
    assert back.event_type == "Deployed" and back.payload.rollback is True
    assert back.payload.model_version_id == "fraud/2" and back.payload.previous_model_version_id == "fraud/3"
    assert deployer.pointer()["model_version_id"] == "fraud/2"
    await rollback(deployer)
    assert deployer.pointer()["model_version_id"] == "fraud/1"
    with pytest.raises(RollbackRefused, match="no earlier one") as refused:
        await rollback(deployer)
    assert refused.value.status == 409
    audit = [(d.model_version_id, d.rollback, d.requested_by) for d in await deployer.deployments()]
    assert audit[-2:] == [("fraud/2", True, "lee"), ("fraud/1", True, "lee")]


async def test_rollback_of_a_stage_with_nothing_live_is_a_404(deployer):
    with pytest.raises(RollbackRefused) as refused:
        await rollback(deployer)
    assert refused.value.status == 404


async def test_a_deployment_left_half_done_by_a_dead_deployer_is_finished_once(deployer):
    from services.deployer.deploy import record_approval

    async with deployer.uow() as uow:  # as a deployer killed mid-deployment leaves it: Deploying, leased
        await record_approval(uow, approval_decided(version=1, approval_id="a1"), "local")
        await uow.commit()
        deployment = (await uow.session.scalars(select(Deployment))).one()
        deployment.status = "Deploying"
        stage = await uow.session.get(Stage, ("fraud", "dev"))
        stage.lease_owner, stage.lease_until = "dead-host:1:x", utcnow() + timedelta(seconds=30)
        await uow.commit()
    async with deployer.uow() as uow:  # its lease has not run out: hands off
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
    assert deployer.target.deployed == []
    async with deployer.uow() as uow:
        stage = await uow.session.get(Stage, ("fraud", "dev"))
        stage.lease_until = utcnow() - timedelta(seconds=1)
        await uow.commit()
    async with deployer.uow() as uow:
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
    assert deployer.target.deployed == ["fraud/1"]
    assert [e.event_type for e in await deployer.events()] == ["Deployed"]


async def test_a_rejection_deploys_nothing(deployer):
    assert await deployer.deliver(approval_decided(decision="Rejected")) == "skipped"
    assert await deployer.deployments() == []


class GatedTarget(FakeTarget):
    """Deploys only once `go` is set: a deployment that takes its time."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.go = asyncio.Event(), asyncio.Event()

    async def deploy(self, spec: DeploySpec) -> str:
        self.started.set()
        await self.go.wait()
        return await super().deploy(spec)


async def test_an_approval_arriving_while_the_stage_deploys_is_recorded_at_once_and_deployed_next(deployer):
    deployer.target = deployer.targets["dev"] = target = GatedTarget()
    deployer.handler = partial(on_approval_decided, ssm=deployer.ssm, targets=deployer.targets, options=FAST)
    first = asyncio.create_task(deployer.deliver(approval_decided(version=1, approval_id="a1")))
    await asyncio.wait_for(target.started.wait(), timeout=5)
    second = asyncio.create_task(deployer.deliver(approval_decided(version=2, approval_id="a2")))
    deadline = asyncio.get_running_loop().time() + 5
    while {d.model_version_id: d.status for d in await deployer.deployments()}.get("fraud/2") != "Pending":
        assert asyncio.get_running_loop().time() < deadline, "the second approval was not recorded while the first deployed"
        await asyncio.sleep(0.01)
    target.go.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), timeout=5) == ["handled", "handled"]
    assert target.deployed == ["fraud/1", "fraud/2"] and deployer.pointer()["model_version_id"] == "fraud/2"
    async with deployer.sessionmaker() as session:
        stage = await session.get(Stage, ("fraud", "dev"))
    assert stage.lease_owner is None  # released with the last deployment: another deployer may take the stage


async def test_a_target_is_polled_until_it_settles_and_a_target_that_never_does_fails_with_where_it_stands():
    from services.deployer.targets.base import NotSettled, until_settled

    looks = []

    async def settles_on_the_third_look() -> None:
        looks.append(1)
        if len(looks) < 3:
            raise NotSettled("endpoint Creating")

    await until_settled(settles_on_the_third_look, wait_seconds=5, poll_seconds=0)
    assert len(looks) == 3

    async def never() -> None:
        raise NotSettled("endpoint Creating")

    with pytest.raises(DeployError, match="endpoint Creating after 0s"):
        await until_settled(never, wait_seconds=0.05, poll_seconds=0.01)

    async def failed() -> None:
        looks.append(1)
        raise DeployError("endpoint Failed: image not found")

    looks.clear()
    with pytest.raises(DeployError, match="image not found"):
        await until_settled(failed, wait_seconds=5, poll_seconds=0)
    assert len(looks) == 1  # a failure is not waited on
