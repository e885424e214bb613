"""Model groups: create, list, read and change them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import or_, select

from services.registrar import access
from services.registrar.catalog import (
    GroupChange,
    GroupExists,
    GroupIn,
    UnknownGroup,
    change_group,
    create_group,
)
from services.registrar.deps import GroupName, ReadableErrors
from services.registrar.models import ModelGroup
from services.registrar.schemas import GroupOut, GroupPage
from shared.http import CurrentPrincipal, SessionDep, UowDep

router = APIRouter(tags=["groups"], route_class=ReadableErrors)


@router.post("/v1/groups", status_code=201, response_model=GroupOut, responses={409: {"description": "exists"}})
async def create_model_group(body: GroupIn, uow: UowDep, caller: CurrentPrincipal) -> GroupOut:
    """Create a model group owned by one of the caller's teams (registering into an unknown group creates it
    too, unless configured otherwise). Needs the registrant role."""
    access.require_write(caller, None, body.name, to="create model groups")
    body = body.model_copy(update={"team": access.team_for_new_group(caller, body.team)})
    try:
        group = await create_group(uow.session, body)
    except GroupExists as exc:
        raise HTTPException(409, str(exc)) from None
    await uow.commit()
    return GroupOut.of(group)


@router.get("/v1/groups", response_model=GroupPage)
async def list_groups(
    session: SessionDep,
    caller: CurrentPrincipal,
    q: Annotated[str | None, Query(description="Text in the name or description.")] = None,
    owner: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> GroupPage:
    stmt = select(ModelGroup).order_by(ModelGroup.name)
    if q:
        stmt = stmt.where(or_(ModelGroup.name.icontains(q, autoescape=True), ModelGroup.description.icontains(q, autoescape=True)))
    groups = [g for g in await session.scalars(stmt) if access.can_read(caller, g)]
    caller.require(access.Role.VIEWER, to="read the catalog")
    if owner:  # owners is a JSON list: filtered here (groups are few)
        groups = [g for g in groups if owner in g.owners]
    page = groups[offset : offset + limit]
    more = offset + limit < len(groups)
    return GroupPage(items=[GroupOut.of(g) for g in page], limit=limit, offset=offset, next_offset=offset + limit if more else None)


@router.get("/v1/groups/{group}", response_model=GroupOut)
async def get_group(group: GroupName, session: SessionDep, caller: CurrentPrincipal) -> GroupOut:
    row = await session.get(ModelGroup, group)
    if row is None:
        raise HTTPException(404, str(UnknownGroup(group)))
    access.require_read(caller, row)
    return GroupOut.of(row)


@router.patch("/v1/groups/{group}", response_model=GroupOut)
async def update_group(group: GroupName, body: GroupChange, uow: UowDep, caller: CurrentPrincipal) -> GroupOut:
    """Change the description, tags, owners or sharing; fields left out stay as they are. Needs the registrant
    role in the owning team."""
    access.require_write(caller, await uow.session.get(ModelGroup, group), group, to=f"change model group '{group}'")
    try:
        row = await change_group(uow.session, group, body)
    except UnknownGroup as exc:
        raise HTTPException(404, str(exc)) from None
    await uow.commit()
    return GroupOut.of(row)
