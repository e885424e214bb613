"""A stage's rollout, for operators: read it, pause it, resume it, abort it (services/deployer/rollout.py).

Pausing keeps the new version's share and stops the steps (the guardrails still watch and still roll back);
resuming lets the step's bake go on from where it was; aborting asks the worker to roll the stage back to
the live version (Aborted). Each is announced (RolloutStepped, or RolloutRolledBack for the abort) and
needs the operator role for the stage."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from services.deployer import rollout as rollouts
from services.deployer.deploy import lock_stage
from services.deployer.deps import DeployerDep
from services.deployer.models import Deployment, Rollout
from services.deployer.schemas import RolloutOut
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import utcnow
from shared.http import CurrentPrincipal, UowDep
from shared.identity import Role

router = APIRouter(tags=["rollouts"])


def out(row: Rollout, d: Deployment) -> RolloutOut:
    return RolloutOut(
        deployment_id=row.deployment_id, group=row.group_name, stage=row.stage, model_version_id=d.model_version_id,
        live_model_version_id=row.live_model_version_id, strategy=row.strategy, status=row.status, step=row.step_index + 1,
        steps=len(row.steps), shares=list(row.steps), share=row.share, router_url=row.router_url, reason=row.reason,
        evaluation=row.evaluation, abort_requested_by=row.abort_requested_by, started_at=row.started_at,
        step_started_at=row.step_started_at, evaluated_at=row.evaluated_at, finished_at=row.finished_at,
    )


async def _newest(uow: UnitOfWork, group: str, stage: str) -> tuple[Rollout, Deployment]:
    row = await rollouts.current(uow, group, stage)
    d = await uow.session.get(Deployment, row.deployment_id) if row else None
    if row is None or d is None:
        raise Refused(404, f"{group}/{stage} has had no rollout (its policy's rollout is all-at-once, or nothing was rolled out yet)")
    return row, d


@router.get("/v1/groups/{group}/stages/{stage}/rollout", response_model=RolloutOut,
            summary="The stage's newest rollout: status, step, share, the guardrails' last values")
async def get_rollout(group: str, stage: str, uow: UowDep, _: CurrentPrincipal) -> RolloutOut:
    return out(*await _newest(uow, group, stage))


async def _running(uow: UnitOfWork, group: str, stage: str, caller: CurrentPrincipal, what: str) -> tuple[Rollout, Deployment]:
    caller.require(Role.OPERATOR, stage, to=f"{what} the rollout of {group} in {stage}")
    await lock_stage(uow.session, group, stage)  # the worker steps under this lock too
    row, d = await _newest(uow, group, stage)
    await uow.session.refresh(row)
    if row.status not in rollouts.ACTIVE:
        raise Refused(409, f"the rollout of {d.model_version_id} in {stage} is {row.status}: there is nothing to {what}")
    return row, d


@router.post("/v1/groups/{group}/stages/{stage}/rollout/pause", response_model=RolloutOut,
             summary="Pause: the share stays, no step ends; guardrails still watch (operator)")
async def pause(group: str, stage: str, uow: UowDep, caller: CurrentPrincipal, deployer: DeployerDep) -> RolloutOut:
    row, d = await _running(uow, group, stage, caller, "pause")
    if row.status == rollouts.PAUSED:
        raise Refused(409, f"the rollout of {d.model_version_id} in {stage} is paused already (since {row.paused_at:%H:%M:%S})")
    row.status, row.paused_at = rollouts.PAUSED, utcnow()
    rollouts.announce_step(uow, d, row, reason=f"paused by {caller.name}")
    await uow.commit()
    return out(row, d)


@router.post("/v1/groups/{group}/stages/{stage}/rollout/resume", response_model=RolloutOut,
             summary="Resume a paused rollout: its step's bake goes on where it was (operator)")
async def resume(group: str, stage: str, uow: UowDep, caller: CurrentPrincipal, deployer: DeployerDep) -> RolloutOut:
    row, d = await _running(uow, group, stage, caller, "resume")
    if row.status != rollouts.PAUSED:
        raise Refused(409, f"the rollout of {d.model_version_id} in {stage} is not paused ({row.status})")
    now = utcnow()
    row.step_started_at = row.step_started_at + (now - row.paused_at if row.paused_at else timedelta())
    row.status, row.paused_at = rollouts.BAKING, None
    rollouts.announce_step(uow, d, row, reason=f"resumed by {caller.name}")
    await uow.commit()
    return out(row, d)


@router.post("/v1/groups/{group}/stages/{stage}/rollout/abort", status_code=202, response_model=RolloutOut,
             summary="Abort: the worker rolls the stage back to the live version (operator)")
async def abort(group: str, stage: str, uow: UowDep, caller: CurrentPrincipal, deployer: DeployerDep) -> RolloutOut:
    row, d = await _running(uow, group, stage, caller, "abort")
    row.abort_requested_by = row.abort_requested_by or caller.name
    uow.after_commit(deployer.wake.set)
    await uow.commit()
    return out(row, d)
