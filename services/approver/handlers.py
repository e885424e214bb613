"""The approver opens the first stage when a version is registered, and the next one after each deployment;
it audits an approval whose deployment was superseded (the version will never serve that stage)."""

from __future__ import annotations

from sqlalchemy import select

from services.approver import audit
from services.approver.approvals import Urls, open_stage
from services.approver.models import ApprovalRequest, AuditEntry, KnownVersion, LiveVersion
from services.approver.policy import Policy
from shared.bus import Skip
from shared.db import UnitOfWork
from shared.events import Deployed, DeploymentSuperseded, ModelRegistered

SUPERSEDED_DEPLOYMENT = "deployment_superseded"  # the audit action


async def on_model_registered(event: ModelRegistered, uow: UnitOfWork, policy: Policy, urls: Urls) -> None:
    p = event.payload
    version = await uow.session.get(KnownVersion, p.model_version_id)
    if version is None:
        version = KnownVersion(
            model_version_id=p.model_version_id,
            group_name=p.group,
            version=p.version,
            registered_by=p.registered_by,
            artifact_uri=p.artifact_uri,
            artifact_digest=p.artifact_digest,
            artifact_version_id=p.artifact_version_id,
            containers=[c.model_dump(mode="json") for c in p.containers],
            metrics=p.metrics,
            lineage=p.lineage,
            model_card_summary=p.model_card_summary,
        )
        uow.session.add(version)
        await uow.session.flush()
    await open_stage(uow, version, policy.stages[0], event, urls)


async def on_deployed(event: Deployed, uow: UnitOfWork, policy: Policy, urls: Urls) -> None:
    p = event.payload
    live = await uow.session.get(LiveVersion, (p.group, p.stage))
    if live is None:
        uow.session.add(LiveVersion(group_name=p.group, stage=p.stage, model_version_id=p.model_version_id, deployed_at=p.deployed_at))
    elif live.deployed_at <= p.deployed_at:
        live.model_version_id, live.deployed_at = p.model_version_id, p.deployed_at
    if p.rollback:
        return
    try:
        next_stage = policy.next_stage(p.stage)
    except ValueError:
        raise Skip(f"stage {p.stage} is not in the policy") from None
    if next_stage is None:
        return
    version = await uow.session.get(KnownVersion, p.model_version_id)
    if version is None:
        raise LookupError(f"Deployed arrived before ModelRegistered for {p.model_version_id}")
    await open_stage(uow, version, next_stage, event, urls)


async def on_deployment_superseded(event: DeploymentSuperseded, uow: UnitOfWork) -> None:
    """Appends to the approval's audit trail that its deployment never ran (a newer version took the stage)."""
    p = event.payload
    request = await uow.session.get(ApprovalRequest, p.approval_id) if p.approval_id else None
    if request is None:
        raise Skip(f"the superseded deployment of {p.model_version_id} to {p.stage} has no approval of this approver")
    audited = await uow.session.scalar(
        select(AuditEntry.id).where(AuditEntry.approval_id == request.id, AuditEntry.action == SUPERSEDED_DEPLOYMENT)
    )
    if audited is not None:
        raise Skip(f"approval {request.id}: its superseded deployment is audited already")
    audit.record(uow, SUPERSEDED_DEPLOYMENT, "deployer", request, decision=request.status, reason=p.reason,
                 deployment_id=p.deployment_id, superseded_by=p.superseded_by, event_id=event.event_id)
