"""Deployments: the audit trail of every deployment, and what each stage serves now."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.models import Deployment, Stage
from services.deployer.schemas import DeploymentOut, Status
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Role
from shared.limits import LIMITS, Name, PageLimit, PageOffset, one_page

router = APIRouter(tags=["deployments"])


async def live_ids(session: AsyncSession, group: str | None) -> set[str]:
    query = select(Stage.live_deployment_id).where(Stage.live_deployment_id.is_not(None))
    if group:
        query = query.where(Stage.group_name == group)
    return set((await session.scalars(query)).all())


@router.get("/v1/deployments", response_model=list[DeploymentOut])
async def list_deployments(
    session: SessionDep,
    response: Response,
    caller: CurrentPrincipal,
    group: Name | None = Query(None, description="Only this model group."),
    stage: Name | None = Query(None, description="Only this stage."),
    status: Status | None = Query(None, description="Only deployments in this status."),
    limit: PageLimit = LIMITS.max_page_size,
    offset: PageOffset = 0,
) -> list[DeploymentOut]:
    """Every deployment, oldest first: the audit trail. `live` marks what each stage serves now. One page at a
    time: the X-Next-Offset header, when present, is the `offset` of the next page."""
    caller.require(Role.VIEWER, to="read deployments")
    query = select(Deployment).order_by(Deployment.created_at, Deployment.id)
    if group:
        query = query.where(Deployment.group_name == group)
    if stage:
        query = query.where(Deployment.stage == stage)
    if status:
        query = query.where(Deployment.status == status)
    live = await live_ids(session, group)
    rows = one_page(list(await session.scalars(query.limit(limit + 1).offset(offset))), limit, offset, response)
    return [DeploymentOut.of(d, live) for d in rows]


@router.get("/v1/deployments/live", response_model=list[DeploymentOut])
async def list_live(
    session: SessionDep, caller: CurrentPrincipal, group: str | None = Query(None, description="Only this model group.")
) -> list[DeploymentOut]:
    """What each group's stages serve now, one entry per group and stage."""
    caller.require(Role.VIEWER, to="read deployments")
    query = select(Deployment).join(Stage, Stage.live_deployment_id == Deployment.id)
    if group:
        query = query.where(Deployment.group_name == group)
    rows = list(await session.scalars(query.order_by(Deployment.group_name, Deployment.stage)))
    return [DeploymentOut.of(d, {d.id}) for d in rows]


@router.get("/v1/deployments/{deployment_id}", response_model=DeploymentOut)
async def get_deployment(session: SessionDep, deployment_id: str, caller: CurrentPrincipal) -> DeploymentOut:
    caller.require(Role.VIEWER, to="read deployments")
    d = await session.get(Deployment, deployment_id)
    if d is None:
        raise HTTPException(404, f"no deployment {deployment_id}; list them with GET /v1/deployments")
    return DeploymentOut.of(d, await live_ids(session, d.group_name))
