"""Rollback of a stage to the version live before the current one."""

from __future__ import annotations

from fastapi import APIRouter, Body

from services.deployer.deploy import request_rollback
from services.deployer.deps import DeployerDep
from services.deployer.schemas import DeploymentOut, RollbackIn
from shared.http import UowDep

router = APIRouter(tags=["deployments"])


@router.post(
    "/v1/groups/{group}/stages/{stage}/rollback",
    status_code=202,
    response_model=DeploymentOut,
    responses={404: {"description": "nothing live in that stage"}, 409: {"description": "nothing earlier, or a deployment in progress"}},
)
async def rollback(
    group: str, stage: str, deployer: DeployerDep, uow: UowDep, body: RollbackIn = Body(default_factory=RollbackIn)
) -> DeploymentOut:
    """Puts back the version that was live before the current one, through the same path as a deployment
    (target, verification, pointer), announced as Deployed with `rollback: true`. Accepted at once; follow it
    with GET /v1/deployments/{deployment_id}. Rolling back again goes one version further back."""
    deployment = await request_rollback(uow, group, stage, deployer.targets, body.requested_by, body.reason)
    uow.after_commit(deployer.wake.set)
    await uow.commit()
    return DeploymentOut.of(deployment, set())
