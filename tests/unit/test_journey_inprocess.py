"""The journey's logic across the four services' handlers, without a network."""

import json

from sqlalchemy import func, select

from services.approver.approvals import decide
from services.approver.models import AuditEntry
from services.deployer.models import Deployment
from services.notifier.models import Delivery
from services.registrar.catalog import Registration, register
from services.registrar.models import ModelVersion
from shared.events import new_id
from shared.topology import CONSUMES
from tests.inprocess import InProcessSystem


async def register_version(system: InProcessSystem, auc: float, group: str = "fraud", by: str = "ana") -> str:
    async with system.uow("registrar") as uow:
        version = await register(uow, group, Registration(artifact_uri="s3://b/m", registered_by=by, metrics={"auc": auc}))
        await uow.commit()
    return version.id


async def version_record(system: InProcessSystem, mvid: str) -> ModelVersion:
    async with system.sessionmakers["registrar"]() as session:
        return await session.get(ModelVersion, mvid)


async def test_a_good_version_is_approved_and_deployed_to_dev_then_waits_for_test(tmp_path):
    system = await InProcessSystem(tmp_path).start()
    mvid = await register_version(system, auc=0.93)
    await system.pump()
    types = [e.event_type for e in system.delivered]
    assert types == ["ModelRegistered", "ApprovalDecided", "DeploymentStarted", "Deployed", "ApprovalRequested"]
    pointer = json.loads(system.ssm.parameters["/modelgate/fraud/dev/current"])
    assert pointer["model_version_id"] == mvid and pointer["version"] == 1
    record = await version_record(system, mvid)
    assert record.approval_status == "Approved"
    assert {s: d["status"] for s, d in record.stages.items()} == {"dev": "Deployed", "test": "PendingApproval"}


async def test_a_weak_version_is_rejected_for_dev_and_never_deployed(tmp_path):
    system = await InProcessSystem(tmp_path).start()
    mvid = await register_version(system, auc=0.5)
    await system.pump()
    assert [e.event_type for e in system.delivered] == ["ModelRegistered", "ApprovalDecided"]
    assert system.ssm.writes == 0
    assert (await version_record(system, mvid)).approval_status == "Rejected"


async def test_redelivered_events_change_nothing_twice(tmp_path):
    system = await InProcessSystem(tmp_path).start()
    await register_version(system, auc=0.93)
    await system.pump()
    for event in list(system.delivered):
        for service, types in CONSUMES.items():
            if event.event_type in types:
                assert await system.deliver(service, event) == "duplicate"
    await system.pump()
    assert system.ssm.writes == 1
    async with system.sessionmakers["deployer"]() as session:
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 1
    async with system.sessionmakers["notifier"]() as session:
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 3


async def test_prod_needs_two_distinct_approvers_none_of_them_the_registrant(tmp_path):
    system = await InProcessSystem(tmp_path).start()
    mvid = await register_version(system, auc=0.93, by="ana")
    await system.pump()
    test_request = system.delivered[-1].payload.approval_id
    async with system.uow("approver") as uow:
        await decide(uow, test_request, "lee", ["ml-leads"], "Approved", None)
        await uow.commit()
    await system.pump()
    prod_request = system.delivered[-1]
    assert prod_request.event_type == "ApprovalRequested" and prod_request.payload.stage == "prod"
    for who in ("ana", "kim", "kim"):
        async with system.uow("approver") as uow:
            try:
                await decide(uow, prod_request.payload.approval_id, who, ["model-risk"], "Approved", None)
                await uow.commit()
            except Exception as refused:
                assert who == "ana" or "already voted" in str(refused)
    await system.pump()
    assert (await version_record(system, mvid)).stages["prod"]["status"] == "PendingApproval"
    async with system.uow("approver") as uow:
        await decide(uow, prod_request.payload.approval_id, "raj", ["model-risk"], "Approved", None)
        await uow.commit()
    await system.pump()
    assert (await version_record(system, mvid)).stages["prod"]["status"] == "Deployed"
    assert json.loads(system.ssm.parameters["/modelgate/fraud/prod/current"])["model_version_id"] == mvid


async def test_twenty_versions_of_one_group_at_once_end_with_exactly_the_one_the_pointer_names_deployed(tmp_path):
    system = await InProcessSystem(tmp_path).start()
    for _ in range(20):
        await register_version(system, auc=0.95)
    await system.pump(timeout=30)
    records = [await version_record(system, f"fraud/{n}") for n in range(1, 21)]
    dev = {r.id: r.stages["dev"]["status"] for r in records}
    pointer = json.loads(system.ssm.parameters["/modelgate/fraud/dev/current"])
    assert [mvid for mvid, status in dev.items() if status == "Deployed"] == [pointer["model_version_id"]]
    assert set(dev.values()) <= {"Deployed", "Superseded", "Retired"}, dev
    assert all(r.approval_status == "Approved" for r in records)
    superseded = {r.id for r in records if dev[r.id] == "Superseded"}
    assert all(r.stages["dev"]["superseded_by"] for r in records if r.id in superseded)
    async with system.sessionmakers["approver"]() as session:  # the approvals' audit says they never deployed
        audited = set(await session.scalars(select(AuditEntry.model_version_id).where(AuditEntry.action == "deployment_superseded")))
    assert audited == superseded and len(superseded) >= 10
    for event in [e for e in system.delivered if e.event_type == "DeploymentSuperseded"][:3]:  # a producer's retry
        assert await system.deliver("approver", event.model_copy(update={"event_id": new_id()})) == "skipped"
    async with system.sessionmakers["approver"]() as session:
        again = list(await session.scalars(select(AuditEntry.model_version_id).where(AuditEntry.action == "deployment_superseded")))
    assert sorted(again) == sorted(audited)
