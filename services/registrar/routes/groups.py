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
from shared.limits import Name, PageLimit, PageOffset, SearchText

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


#: Groups read from the database at a time while listing: memory stays this small, however many there are.
GROUP_BATCH = 500


@router.get("/v1/groups", response_model=GroupPage)
async def list_groups(
    session: SessionDep,
    caller: CurrentPrincipal,
    q: Annotated[SearchText | None, Query(description="Text in the name or description.")] = None,
    owner: Annotated[Name | None, Query()] = None,
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> GroupPage:
    """The groups the caller may read, by name, a page at a time (`next_offset` is the next page's)."""
    caller.require(access.Role.VIEWER, to="read the catalog")
    base = select(ModelGroup).order_by(ModelGroup.name).limit(GROUP_BATCH)
    if q:
        base = base.where(or_(ModelGroup.name.icontains(q, autoescape=True), ModelGroup.description.icontains(q, autoescape=True)))
    page: list[ModelGroup] = []
    skipped, after = 0, None
    while len(page) <= limit:  # batches by name; owners is a JSON list and sharing per team, so checked here
        batch = list(await session.scalars(base if after is None else base.where(ModelGroup.name > after)))
        for g in batch:
            if not access.can_read(caller, g) or (owner and owner not in g.owners):
                continue
            if skipped < offset:
                skipped += 1
            else:
                page.append(g)
        if len(batch) < GROUP_BATCH:
            break
        after = batch[-1].name
    more = len(page) > limit
    return GroupPage(items=[GroupOut.of(g) for g in page[:limit]], limit=limit, offset=offset,
                     next_offset=offset + limit if more else None)


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
