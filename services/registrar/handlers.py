"""The registrar reflects each step of a version's journey in its record and history.

Events arrive in any order and possibly twice; set_stage (catalog.py) keeps what is newer, so the same
events in any order end in the same stages. Once the events of a (group, stage) are in, exactly one version
reads Deployed there: each Deployed retires what the stage served before (the event's previous version, and
any other version still reading Deployed).

Comet and SageMaker write-backs are only recorded here (services/registrar/writebacks.py); a worker calls
Comet or SageMaker after commit. SageMaker's are recorded for versions the bridge registered, on decisions,
deployments (and the version a deployment retired) and failed deployments.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select

from services.registrar.catalog import record_history, set_stage
from services.registrar.comet_writeback import CometWriteback
from services.registrar.models import ModelGroup, ModelVersion, StageStatus, VersionStage, WritebackAction
from services.registrar.writebacks import record_sagemaker_writeback, record_writeback
from shared.db import UnitOfWork
from shared.events import (
    ApprovalDecided,
    ApprovalRequested,
    Deployed,
    DeploymentFailed,
    DeploymentStarted,
    DeploymentSuperseded,
    Envelope,
    RolloutPromoted,
    RolloutRolledBack,
    RolloutStepped,
)


class VersionNotFound(Exception):
    """The event is about a version this registrar has not stored (yet): retried, then dead-lettered."""


async def _version(uow: UnitOfWork, event: Envelope) -> ModelVersion:
    # Locked: two events about one version (say Deployed(dev) and ApprovalRequested(test)) apply one by one.
    version = await uow.session.get(ModelVersion, event.payload.model_version_id, with_for_update=True)
    if version is None:
        raise VersionNotFound(event.payload.model_version_id)
    return version


async def on_approval_requested(event: ApprovalRequested, uow: UnitOfWork) -> None:
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.PENDING_APPROVAL, event, approval_id=p.approval_id)
    record_history(uow, event)


async def on_approval_decided(
    event: ApprovalDecided, uow: UnitOfWork, comet: CometWriteback | None = None, wake: asyncio.Event | None = None,
    sagemaker_writeback: bool = False,
) -> None:
    version = await _version(uow, event)
    p = event.payload
    if p.decision == StageStatus.REJECTED and p.superseded_by:  # a newer version took the stage: not a person's verdict
        await set_stage(uow.session, version, p.stage, StageStatus.SUPERSEDED, event, superseded_by=p.superseded_by,
                        approval_id=p.approval_id)
    else:
        await set_stage(uow.session, version, p.stage, StageStatus(p.decision), event, decided_by=p.decided_by, approval_id=p.approval_id)
    record_history(uow, event)
    await record_writeback(uow, version, comet, wake, p.stage, WritebackAction.APPROVAL_DECIDED, p.decision)
    await record_sagemaker_writeback(uow, version, sagemaker_writeback, wake, p.stage, WritebackAction.APPROVAL_DECIDED,
                                     p.decision)


async def on_deployment_started(event: DeploymentStarted, uow: UnitOfWork) -> None:
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYING, event, deployment_id=p.deployment_id,
                    target=p.target, rollback=p.rollback)
    record_history(uow, event)


async def on_deployment_superseded(event: DeploymentSuperseded, uow: UnitOfWork) -> None:
    version = await _version(uow, event)
    p = event.payload
    if not p.rollback:  # a rollback overtaken by a newer approval: the version keeps what it read (Retired)
        await set_stage(uow.session, version, p.stage, StageStatus.SUPERSEDED, event, deployment_id=p.deployment_id,
                        approval_id=p.approval_id, superseded_by=p.superseded_by,
                        superseded_by_version=p.superseded_by_version, reason=p.reason)
    record_history(uow, event)


async def on_deployed(
    event: Deployed, uow: UnitOfWork, comet: CometWriteback | None = None, wake: asyncio.Event | None = None,
    sagemaker_writeback: bool = False,
) -> None:
    p = event.payload
    # One Deployed per group at a time: retiring what it replaced locks other versions, never in a cycle.
    await uow.session.get(ModelGroup, p.group, with_for_update=True)
    version = await _version(uow, event)
    changed = await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYED, event,
                              deployment_id=p.deployment_id, target=p.target, endpoint_url=p.endpoint_url,
                              rollback=p.rollback)
    await _replace_previous(uow, event)  # even when late: it says what the stage served until then
    if changed:
        await _one_deployed(uow, version, p.stage, event)
    record_history(uow, event)
    await record_writeback(uow, version, comet, wake, p.stage, WritebackAction.DEPLOYED)
    await record_sagemaker_writeback(uow, version, sagemaker_writeback, wake, p.stage, WritebackAction.DEPLOYED)
    if sagemaker_writeback and p.previous_model_version_id and p.previous_model_version_id != p.model_version_id:
        previous = await uow.session.get(ModelVersion, p.previous_model_version_id)
        if previous is not None:  # now Retired or RolledBack there
            await record_sagemaker_writeback(uow, previous, sagemaker_writeback, wake, p.stage, WritebackAction.DEPLOYED)


async def _replace_previous(uow: UnitOfWork, event: Deployed) -> None:
    """The version the deployment replaced reads Retired, or RolledBack when the stage was rolled back from it."""
    p = event.payload
    if not p.previous_model_version_id or p.previous_model_version_id == p.model_version_id:
        return
    previous = await uow.session.get(ModelVersion, p.previous_model_version_id, with_for_update=True)
    if previous is None:
        return
    status = StageStatus.ROLLED_BACK if p.rollback else StageStatus.RETIRED
    if not await set_stage(uow.session, previous, p.stage, status, event, replaced_by=p.model_version_id):
        current = previous.stages[p.stage]
        if current.get("replaced_by_guessed"):  # retired by _one_deployed, before this event said by which version
            exact = {k: v for k, v in current.items() if k != "replaced_by_guessed"}
            previous.stages = {**previous.stages, p.stage: {**exact, "status": status, "replaced_by": p.model_version_id}}
            await uow.session.merge(VersionStage(version_id=previous.id, stage=p.stage, status=status))


async def _one_deployed(uow: UnitOfWork, version: ModelVersion, stage: str, event: Deployed) -> None:
    """Of the versions reading Deployed for the stage, the one deployed last stays; the others read Retired
    (so one holds even when an event naming the previous version was lost, or the events came out of order)."""
    others = await uow.session.scalars(
        select(ModelVersion)
        .join(VersionStage, VersionStage.version_id == ModelVersion.id)
        .where(ModelVersion.group_name == version.group_name, VersionStage.stage == stage,
               VersionStage.status == StageStatus.DEPLOYED, ModelVersion.id != version.id)
        .with_for_update(of=ModelVersion)
    )
    deployed = [version, *others.all()]
    if len(deployed) == 1:
        return
    newest = max(deployed, key=lambda v: (datetime.fromisoformat(v.stages[stage]["at"]), v.version))
    for v in deployed:
        if v is not newest:
            await set_stage(uow.session, v, stage, StageStatus.RETIRED, event, replaced_by=newest.id,
                            replaced_by_guessed=True)


async def on_deployment_failed(
    event: DeploymentFailed, uow: UnitOfWork, wake: asyncio.Event | None = None, sagemaker_writeback: bool = False
) -> None:
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYMENT_FAILED, event, deployment_id=p.deployment_id,
                    reason=p.reason)
    record_history(uow, event)
    await record_sagemaker_writeback(uow, version, sagemaker_writeback, wake, p.stage, WritebackAction.DEPLOYED)


async def on_rollout_stepped(event: RolloutStepped, uow: UnitOfWork) -> None:
    """The version is rolling out: it reads Deploying, with its share of the stage's traffic."""
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYING, event, deployment_id=p.deployment_id,
                    target=p.target, rollout={"strategy": p.strategy, "status": p.status, "step": p.step, "steps": p.steps,
                                              "share": p.share, "mirror": p.mirror, "live": p.live_model_version_id})
    record_history(uow, event)


async def on_rollout_promoted(event: RolloutPromoted, uow: UnitOfWork) -> None:
    """Kept in the version's history; its Deployed (same transaction at the deployer) moves the stage."""
    await _version(uow, event)
    record_history(uow, event)


async def on_rollout_rolled_back(event: RolloutRolledBack, uow: UnitOfWork) -> None:
    """A guardrail (or an operator) stopped the version's rollout: it reads RolledBack; the live one kept serving."""
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.ROLLED_BACK, event, deployment_id=p.deployment_id,
                    reason=p.reason, rollout={"strategy": p.strategy, "status": p.status, "step": p.step, "share": p.share,
                                              "breached": p.breached, "live": p.live_model_version_id})
    record_history(uow, event)
