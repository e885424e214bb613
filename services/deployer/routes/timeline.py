"""A stage's timeline: every period a version served it, newest first, and which version served at a time.

Built from the deployments that went live (deployed_at set, whatever their status became afterwards): each
period runs from its deployment's deployed_at to the deployed_at of the next one in the stage; the last
one's `to` is null, it serves now. A deployment that never went live (superseded, failed) has no period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.models import Deployment
from services.deployer.schemas import PeriodOut, TimelineOut
from shared.db import UTCDateTime
from shared.errors import Refused
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Role

router = APIRouter(tags=["deployments"])

MAX_PAGE = 500


def _went_live(group: str, stage: str) -> Select[tuple[Deployment]]:
    return select(Deployment).where(
        Deployment.group_name == group, Deployment.stage == stage, Deployment.deployed_at.is_not(None)
    )


async def timeline_page(session: AsyncSession, group: str, stage: str, limit: int, offset: int) -> tuple[list[PeriodOut], bool]:
    """One page of the stage's periods, newest first, and whether older ones follow."""
    until = func.lead(Deployment.deployed_at, type_=UTCDateTime()).over(order_by=(Deployment.deployed_at, Deployment.id))
    query = (
        _went_live(group, stage).add_columns(until.label("until"))
        .order_by(Deployment.deployed_at.desc(), Deployment.id.desc()).offset(offset).limit(limit + 1)
    )
    rows = (await session.execute(query)).all()
    return [PeriodOut.of(d, upto) for d, upto in rows[:limit]], len(rows) > limit


async def period_at(session: AsyncSession, group: str, stage: str, at: datetime) -> PeriodOut | None:
    """The period that covers `at` (from <= at < to), or None when nothing had gone live by then."""
    served = await session.scalar(
        _went_live(group, stage).where(Deployment.deployed_at <= at)
        .order_by(Deployment.deployed_at.desc(), Deployment.id.desc()).limit(1)
    )
    if served is None:
        return None
    after = select(func.min(Deployment.deployed_at)).where(
        Deployment.group_name == group, Deployment.stage == stage, Deployment.deployed_at > served.deployed_at
    )
    return PeriodOut.of(served, await session.scalar(after))


async def _nothing_served(session: AsyncSession, group: str, stage: str, at: datetime) -> Refused:
    first = await session.scalar(select(func.min(Deployment.deployed_at)).where(
        Deployment.group_name == group, Deployment.stage == stage, Deployment.deployed_at.is_not(None)))
    if first is None:
        return Refused(404, f"nothing has served {group}/{stage} yet; its deployments: GET /v1/deployments?group={group}&stage={stage}")
    return Refused(404, f"nothing served {group}/{stage} at {at.isoformat()}: its first version went live at {first.isoformat()}")


@router.get(
    "/v1/groups/{group}/stages/{stage}/timeline",
    response_model=TimelineOut,
    responses={404: {"description": "with ?at=: nothing served the stage at that time"}},
)
async def timeline(
    group: Annotated[str, Path(max_length=200, examples=["fraud-detector"])],
    stage: Annotated[str, Path(max_length=40, examples=["prod"])],
    session: SessionDep,
    caller: CurrentPrincipal,
    at: Annotated[datetime | None, Query(description="Which version served then: an ISO 8601 time with its offset, "
                                                     "e.g. 2026-12-01T14:00:00Z (in a URL, '+' as %2B).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> TimelineOut:
    """Every period a version served the stage, newest first: from, to (null: serving now), the deployment,
    who approved it or asked for the rollback, rollout or rollback, and the artifact's pinned digest.
    With `at`, only the period that covers that time (404 when nothing served the stage then)."""
    caller.require(Role.VIEWER, to="read deployments")
    if at is None:
        items, more = await timeline_page(session, group, stage, limit, offset)
        return TimelineOut(group=group, stage=stage, at=None, items=items, limit=limit, offset=offset,
                           next_offset=offset + limit if more else None)
    if at.tzinfo is None:
        raise Refused(422, f"?at={at.isoformat()} has no offset: say which time zone, e.g. {at.isoformat()}Z or {at.isoformat()}+02:00")
    at = at.astimezone(UTC)
    period = await period_at(session, group, stage, at)
    if period is None:
        raise await _nothing_served(session, group, stage, at)
    return TimelineOut(group=group, stage=stage, at=at, items=[period], limit=1, offset=0, next_offset=None)
