"""Rollback of a stage to the version live before the current one."""

from __future__ import annotations

from fastapi import APIRouter, Body

from services.deployer.deploy import request_rollback
from services.deployer.deps import DeployerDep
from services.deployer.schemas import DeploymentOut, RollbackIn
from shared.errors import Refused
from shared.http import CurrentPrincipal, UowDep
from shared.identity import Role

router = APIRouter(tags=["deployments"])


@router.post(
    "/v1/groups/{group}/stages/{stage}/rollback",
    status_code=202,
    response_model=DeploymentOut,
    responses={404: {"description": "nothing live in that stage"}, 409: {"description": "nothing earlier, or a deployment in progress"}},
)
async def rollback(
    group: str, stage: str, deployer: DeployerDep, uow: UowDep, caller: CurrentPrincipal,
    body: RollbackIn = Body(default_factory=RollbackIn),
) -> DeploymentOut:
    """Puts back the version that was live before the current one, through the same path as a deployment
    (target, verification, pointer), announced as Deployed with `rollback: true`. Accepted at once; follow it
    with GET /v1/deployments/{deployment_id}. Rolling back again goes one version further back.
    Needs the operator role for the stage (`operator` or `operator:<stage>`); `requested_by` is the caller."""
    caller.require(Role.OPERATOR, stage, to=f"roll back {group} in {stage}")
    if body.requested_by is not None and not caller.is_named(body.requested_by):
        raise Refused(403, f"requested_by {body.requested_by!r} is not you ({caller.name}); leave it out")
    deployment = await request_rollback(uow, group, stage, deployer.targets, caller.name, body.reason)
    uow.after_commit(deployer.wake.set)
    await uow.commit()
    return DeploymentOut.of(deployment, set())

