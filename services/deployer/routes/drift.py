"""Drift: whether the Parameter Store pointer, the deployer's live record and the target agree (drift.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.deployer.deps import DeployerDep
from services.deployer.drift import check_stages
from services.deployer.schemas import DriftOut
from shared.events import utcnow
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Role

router = APIRouter(tags=["deployments"])

MAX_STAGES = 200


@router.get("/v1/drift", response_model=DriftOut)
async def drift(
    session: SessionDep,
    deployer: DeployerDep,
    caller: CurrentPrincipal,
    group: Annotated[str | None, Query(max_length=200, description="Only this model group.")] = None,
    stage: Annotated[str | None, Query(max_length=40, description="Only this stage.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_STAGES)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> DriftOut:
    """For each stage: what the deployer's live record, the Parameter Store pointer and the target itself
    (inference server, SageMaker endpoint, ECS task definition) say serves it, and what disagrees.
    `modelgate verify` adds the registrar's catalog and exits non-zero on drift."""
    caller.require(Role.VIEWER, to="read deployments")
    checked = await check_stages(session, deployer.ssm, deployer.targets, group, stage, limit + 1, offset)
    page = checked[:limit]
    return DriftOut(checked_at=utcnow(), drifted=sum(s.drifted for s in page), stages=page,
                    next_offset=offset + limit if len(checked) > limit else None)
