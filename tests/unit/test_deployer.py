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
    on_approval_decided,
    request_rollback,
    run_stage,
)
from services.deployer.models import Deployment, Stage
from services.deployer.settings import DeployerSettings
from services.deployer.targets import DeployError, DeploySpec, Target
from services.deployer.worker import DeploymentWorker
from shared.bus import dispatch
from shared.db import OutboxRow, UnitOfWork, create_tables, make_engine
from shared.errors import Refused as RollbackRefused
from shared.events import parse_event, utcnow
from shared.runtime import Runtime
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
    """The deployer's handler and tables on an SQLite file: each event handled the way the consumer loop
    does, then its stage run the way the deployment worker does."""

    def __init__(self, sessionmaker: async_sessionmaker, target: FakeTarget):  # type: ignore[type-arg]
        self.sessionmaker = sessionmaker
        self.ssm = FakeSsm()
        self.target = target
        self.targets = {"dev": target}
        self.wake = asyncio.Event()
        self.handler = partial(on_approval_decided, targets=self.targets, wake=self.wake)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def deliver(self, event, deploy: bool = True) -> str:  # type: ignore[no-untyped-def]
        outcome = await dispatch(event, self.handler, self.uow)
        if outcome == "handled" and deploy:
            async with self.uow() as uow:
                await run_stage(uow, event.payload.group, event.payload.stage, self.ssm, self.targets, FAST)
        return outcome

    async def events(self, *types: str) -> list:  # type: ignore[type-arg]
        """What the deployer published, in order (only `types`, when given)."""
        async with self.sessionmaker() as session:
            events = [parse_event(r.body) for r in await session.scalars(select(OutboxRow).order_by(OutboxRow.id))]
        return [e for e in events if not types or e.event_type in types]

    async def outcomes(self) -> list:  # type: ignore[type-arg]
        return await self.events("Deployed", "DeploymentFailed")

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
    (event,) = await deployer.outcomes()
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
    assert [e.event_type for e in await deployer.outcomes()] == ["Deployed"]


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
    assert [e.payload.model_version_id for e in await deployer.outcomes()] == ["fraud/2"]


async def test_a_target_failing_every_try_is_announced_as_deployment_failed_and_the_stage_keeps_its_version(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    deployer.target.failures = 3
    await deployer.deliver(approval_decided(version=2, approval_id="a2"))
    failed = (await deployer.outcomes())[-1]
    assert failed.event_type == "DeploymentFailed"
    assert failed.payload.attempts == 3 and "fraud/2 would not start" in failed.payload.reason
    assert deployer.pointer()["model_version_id"] == "fraud/1"
    assert deployer.target.retired == ["fraud/2"]  # what the failed tries left is cleaned up


async def test_a_target_failing_once_succeeds_on_a_retry(deployer):
    deployer.target.failures = 1
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    (deployed,) = await deployer.outcomes()
    assert deployed.event_type == "Deployed"
    assert (await deployer.deployments())[0].attempts == 2


async def test_a_new_version_retires_the_one_it_replaces(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    await deployer.deliver(approval_decided(version=2, approval_id="a2"))
    second = (await deployer.outcomes())[-1]
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
    back = (await deployer.outcomes())[-1]
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
    assert [e.event_type for e in await deployer.events()] == ["Deployed"]  # resumed: not announced as started again


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


def worker_of(deployer: Deployer, tmp_path) -> DeploymentWorker:  # type: ignore[no-untyped-def]
    settings = DeployerSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/deployer.db", namespace="unit")
    runtime = Runtime(settings=settings, engine=None, sessionmaker=deployer.sessionmaker, aws={})  # type: ignore[arg-type]
    return DeploymentWorker(runtime, deployer.ssm, deployer.targets, FAST, deployer.wake, every=30)


async def until(condition, what: str, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_an_approval_arriving_while_the_stage_deploys_is_recorded_at_once_and_deployed_next(deployer, tmp_path):
    deployer.target = deployer.targets["dev"] = target = GatedTarget()
    stop = asyncio.Event()
    worker = asyncio.create_task(worker_of(deployer, tmp_path).run(stop))
    assert await deployer.deliver(approval_decided(version=1, approval_id="a1"), deploy=False) == "handled"
    await asyncio.wait_for(target.started.wait(), timeout=5)
    assert await deployer.deliver(approval_decided(version=2, approval_id="a2"), deploy=False) == "handled"
    statuses = {d.model_version_id: d.status for d in await deployer.deployments()}
    assert statuses == {"fraud/1": "Deploying", "fraud/2": "Pending"}  # recorded at once, while the first deploys
    target.go.set()

    async def both_deployed() -> bool:
        return [d.status for d in await deployer.deployments()] == ["Deployed", "Deployed"]

    await until(both_deployed, "the second approval was not deployed after the first")
    assert target.deployed == ["fraud/1", "fraud/2"] and deployer.pointer()["model_version_id"] == "fraud/2"
    async with deployer.sessionmaker() as session:
        stage = await session.get(Stage, ("fraud", "dev"))
    assert stage.lease_owner is None  # released with the last deployment: another deployer may take the stage
    stop.set()
    await asyncio.wait_for(worker, timeout=5)


async def test_a_thirty_minute_deployment_holds_back_no_other_event_and_no_other_stage(deployer, tmp_path):
    slow = GatedTarget()  # a SageMaker endpoint taking its half hour: `go` is never set in this test
    slow.name = "sagemaker"
    deployer.targets["prod"] = slow
    stop, runner = asyncio.Event(), worker_of(deployer, tmp_path)
    worker = asyncio.create_task(runner.run(stop))
    prod = approval_decided(version=1, approval_id="p1", stage="prod")
    assert await asyncio.wait_for(deployer.deliver(prod, deploy=False), timeout=1) == "handled"
    await asyncio.wait_for(slow.started.wait(), timeout=5)
    for version in (1, 2, 3):  # the queue keeps flowing: each handler returns at once
        event = approval_decided(version=version, approval_id=f"d{version}")
        assert await asyncio.wait_for(deployer.deliver(event, deploy=False), timeout=1) == "handled"

    async def dev_serves_the_newest() -> bool:
        return any(d.stage == "dev" and d.status == "Deployed" and d.version == 3 for d in await deployer.deployments())

    await until(dev_serves_the_newest, "dev waited for prod's deployment")
    assert deployer.pointer("dev")["model_version_id"] == "fraud/3"
    assert {d.stage: d.status for d in await deployer.deployments() if d.stage == "prod"} == {"prod": "Deploying"}
    stop.set()
    for task in (worker, *runner.running.values()):  # SIGTERM's drain would wait; the lease lets another resume
        task.cancel()
    await asyncio.gather(worker, *runner.running.values(), return_exceptions=True)


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


async def test_each_deployment_is_announced_as_started_then_deployed_in_the_transactions_that_make_it_so(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    started, deployed = await deployer.events()
    assert [started.event_type, deployed.event_type] == ["DeploymentStarted", "Deployed"]
    assert started.payload.deployment_id == deployed.payload.deployment_id
    assert started.payload.approval_id == "a1" and started.payload.model_version_id == "fraud/1"
    assert started.occurred_at <= deployed.occurred_at and started.producer == "deployer"


async def test_every_superseded_deployment_is_announced_with_the_version_that_won(deployer):
    from services.deployer.deploy import record_approval

    for version in (1, 2, 3):  # waiting together: the claim supersedes 1 and 2
        async with deployer.uow() as uow:
            await record_approval(uow, approval_decided(version=version, approval_id=f"a{version}"), "local")
            await uow.commit()
    async with deployer.uow() as uow:
        await run_stage(uow, "fraud", "dev", deployer.ssm, deployer.targets, FAST)
    await deployer.deliver(approval_decided(version=2, approval_id="late-2b"))  # older than 3: superseded at once
    superseded = await deployer.events("DeploymentSuperseded")
    assert [(e.payload.model_version_id, e.payload.approval_id) for e in superseded] == [
        ("fraud/1", "a1"), ("fraud/2", "a2"), ("fraud/2", "late-2b")]
    assert {(e.payload.superseded_by, e.payload.superseded_by_version) for e in superseded} == {("fraud/3", 3)}
    rows = {d.approval_id: d for d in await deployer.deployments()}
    assert {e.payload.deployment_id for e in superseded} == {rows[a].id for a in ("a1", "a2", "late-2b")}
    assert all("fraud/3" in e.payload.reason and e.payload.stage == "dev" for e in superseded)
    assert [e.payload.model_version_id for e in await deployer.events("DeploymentStarted")] == ["fraud/3"]
