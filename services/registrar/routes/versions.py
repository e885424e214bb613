"""Model versions: register the next one, list a group's, read one, search across groups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from sqlalchemy.exc import IntegrityError

from services.registrar import access
from services.registrar.catalog import IdempotencyConflict, Registration, UnknownGroup, register
from services.registrar.deps import GroupName, ReadableErrors, RegistrarDep
from services.registrar.models import ModelGroup, ModelVersion
from services.registrar.schemas import VersionOut, VersionPage
from services.registrar.search import InvalidQuery, VersionQuery, search_versions
from shared.http import CurrentPrincipal, SessionDep
from shared.limits import NEXT_OFFSET, PageLimit, PageOffset

router = APIRouter(tags=["versions"], route_class=ReadableErrors)


@router.post(
    "/v1/groups/{group}/versions",
    status_code=201,
    response_model=VersionOut,
    responses={404: {"description": "unknown group (auto-create off)"}, 409: {"description": "Idempotency-Key reused"},
               422: {"description": "invalid body, or the artifact is outside the allowed buckets or does not exist"}},
)
async def register_version(
    group: GroupName,
    body: Registration,
    registrar: RegistrarDep,
    caller: CurrentPrincipal,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Retrying with the same key and body returns the same version."),
    ] = None,
) -> VersionOut:
    """Register the next version of a model group; announces ModelRegistered.

    Upload the artifact first to an allowed bucket (MODELGATE_ARTIFACT_BUCKETS, default `<namespace>-artifacts`):
    an `s3://` URI elsewhere or whose object does not exist is refused, and so are local paths (unless the
    registrar runs with the development switch MODELGATE_ALLOW_LOCAL_ARTIFACTS=true). The registrant is the caller (needs the registrant role in the group's team);
    a `registered_by` naming anyone else is refused.
    """
    async with registrar.runtime.sessionmaker() as session:
        body, team = await access.authorise_registration(session, caller, group, body)
    pin = await registrar.check_artifact(body.artifact_uri)
    step_pins = [pin if step.artifact_uri == body.artifact_uri else await registrar.check_artifact(step.artifact_uri)
                 for step in body.containers]  # an inference pipeline: every step's artifact pinned too
    for attempt in (1, 2):
        async with registrar.runtime.uow() as uow:
            try:
                version = await register(uow, group, body, registrar.settings.auto_create_groups, idempotency_key, team, pin, step_pins)
                await uow.commit()
                return VersionOut.of(version)
            except UnknownGroup as exc:
                raise HTTPException(404, str(exc)) from None
            except IdempotencyConflict as exc:
                raise HTTPException(409, str(exc)) from None
            except IntegrityError:
                if not idempotency_key or attempt == 2:
                    raise
                # the same key registered concurrently: the next attempt finds it
    raise AssertionError("unreachable")


@router.get("/v1/groups/{group}/versions", response_model=list[VersionOut])
async def list_versions(
    response: Response,
    group: GroupName,
    session: SessionDep,
    caller: CurrentPrincipal,
    limit: PageLimit = 1000,
    offset: PageOffset = 0,
) -> list[VersionOut]:
    """The group's versions, oldest first, a page at a time (X-Next-Offset, when present, is the next page's
    `offset`). Search across groups, filter and sort with GET /v1/versions."""
    if (found := await session.get(ModelGroup, group)) is None:
        raise HTTPException(404, str(UnknownGroup(group)))
    access.require_read(caller, found)
    query = VersionQuery(group=group, sort="version", order="asc", limit=limit, offset=offset)
    rows, next_offset = await search_versions(session, query)
    if next_offset is not None:
        response.headers[NEXT_OFFSET] = str(next_offset)
    return [VersionOut.of(v) for v in rows]


@router.get("/v1/versions", response_model=VersionPage)
async def find_versions(query: Annotated[VersionQuery, Query()], session: SessionDep, caller: CurrentPrincipal) -> VersionPage:
    """Search versions across the groups the caller may read, e.g.
    `?metric=auc>=0.9&tag=team=risk&stage=prod&stage_status=Deployed`."""
    try:
        rows, next_offset = await search_versions(session, query, await access.readable_groups(session, caller))
    except InvalidQuery as exc:
        raise HTTPException(422, str(exc)) from None
    return VersionPage(items=[VersionOut.of(v) for v in rows], limit=query.limit, offset=query.offset, next_offset=next_offset)


@router.get("/v1/groups/{group}/versions/{version}", response_model=VersionOut)
async def get_version(group: GroupName, version: int, session: SessionDep, caller: CurrentPrincipal) -> VersionOut:
    if (found := await session.get(ModelGroup, group)) is not None:
        access.require_read(caller, found)
    row = await session.get(ModelVersion, f"{group}/{version}")
    if row is None:
        raise HTTPException(404, f"no version {version} in model group '{group}'")
    return VersionOut.of(row)
