"""A version's history: every event of its journey, the audit trail."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from services.registrar import access
from services.registrar.deps import GroupName, ReadableErrors
from services.registrar.models import HistoryEntry, ModelGroup, ModelVersion
from services.registrar.schemas import HistoryOut
from shared.http import CurrentPrincipal, SessionDep

router = APIRouter(tags=["versions"], route_class=ReadableErrors)


@router.get("/v1/groups/{group}/versions/{version}/history", response_model=list[HistoryOut])
async def get_history(group: GroupName, version: int, session: SessionDep, caller: CurrentPrincipal) -> list[HistoryOut]:
    """Every event of the version's journey, in the order it happened: the audit trail."""
    if (found := await session.get(ModelGroup, group)) is not None:
        access.require_read(caller, found)
    if await session.get(ModelVersion, f"{group}/{version}") is None:
        raise HTTPException(404, f"no version {version} in model group '{group}'")
    rows = await session.scalars(
        select(HistoryEntry)
        .where(HistoryEntry.model_version_id == f"{group}/{version}")
        .order_by(HistoryEntry.occurred_at, HistoryEntry.id)
    )
    return [HistoryOut.model_validate(r, from_attributes=True) for r in rows]
