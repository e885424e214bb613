"""The registrar reflects each step of a version's journey in its record and history.

Comet write-backs are only recorded here (services/registrar/writebacks.py); a worker calls Comet after commit.
"""

from __future__ import annotations

import asyncio

from services.registrar.catalog import record_history, set_stage
from services.registrar.comet_writeback import CometWriteback
from services.registrar.models import ModelVersion, StageStatus, WritebackAction
from services.registrar.writebacks import record_writeback
from shared.db import UnitOfWork
from shared.events import ApprovalDecided, ApprovalRequested, Deployed, DeploymentFailed, Envelope


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
    event: ApprovalDecided, uow: UnitOfWork, comet: CometWriteback | None = None, wake: asyncio.Event | None = None
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


async def on_deployed(
    event: Deployed, uow: UnitOfWork, comet: CometWriteback | None = None, wake: asyncio.Event | None = None
) -> None:
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYED, event, endpoint_url=p.endpoint_url, rollback=p.rollback)
    if p.rollback and p.previous_model_version_id and p.previous_model_version_id != p.model_version_id:
        rolled_back = await uow.session.get(ModelVersion, p.previous_model_version_id, with_for_update=True)
        if rolled_back is not None:  # the version the stage was rolled back from no longer serves there
            await set_stage(uow.session, rolled_back, p.stage, StageStatus.ROLLED_BACK, event, replaced_by=p.model_version_id)
    record_history(uow, event)
    await record_writeback(uow, version, comet, wake, p.stage, WritebackAction.DEPLOYED)


async def on_deployment_failed(event: DeploymentFailed, uow: UnitOfWork) -> None:
    version = await _version(uow, event)
    p = event.payload
    await set_stage(uow.session, version, p.stage, StageStatus.DEPLOYMENT_FAILED, event, reason=p.reason)
    record_history(uow, event)
