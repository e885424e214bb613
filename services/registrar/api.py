"""The registrar's HTTP API: model groups, versions, search and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from services.registrar.catalog import (
    GROUP_NAME,
    GROUP_NAME_RULE,
    GroupChange,
    GroupExists,
    GroupIn,
    IdempotencyConflict,
    Registration,
    UnknownGroup,
    change_group,
    create_group,
    register,
)
from services.registrar.comet_api import comet_router
from services.registrar.models import HistoryEntry, ModelGroup, ModelVersion
from services.registrar.search import InvalidQuery, VersionQuery, search_versions
from shared.service import Runtime

GroupName = Annotated[str, Path(pattern=GROUP_NAME, description="Letters, digits, '.', '_' and '-'.", examples=["fraud-detector"])]


class VersionOut(BaseModel):
    model_version_id: str = Field(examples=["fraud-detector/3"])
    group: str
    version: int
    artifact_uri: str
    registered_by: str
    source: str
    framework: str | None
    description: str
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    metadata: dict[str, Any]
    model_card: dict[str, Any]
    lineage: dict[str, Any]
    approval_status: str = Field(description="SageMaker's: PendingManualApproval, Approved or Rejected.")
    stages: dict[str, str] = Field(description="stage -> PendingApproval, Approved, Rejected, Superseded (a newer version took the stage), Deployed, DeploymentFailed or RolledBack (the stage was rolled back from it)")
    stage_details: dict[str, dict[str, Any]]
    created_at: datetime

    @classmethod
    def of(cls, v: ModelVersion) -> VersionOut:
        return cls(
            model_version_id=v.id,
            group=v.group_name,
            version=v.version,
            artifact_uri=v.artifact_uri,
            registered_by=v.registered_by,
            source=v.source,
            framework=v.framework,
            description=v.description,
            metrics=v.metrics,
            params=v.params,
            tags=v.tags,
            metadata=v.meta,
            model_card=v.model_card,
            lineage=v.lineage,
            approval_status=v.approval_status,
            stages={stage: d["status"] for stage, d in v.stages.items()},
            stage_details=v.stages,
            created_at=v.created_at,
        )


class VersionPage(BaseModel):
    items: list[VersionOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Pass as `offset` for the next page; null on the last page.")


class GroupOut(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    owners: list[str]
    latest_version: int = Field(description="The number of the last registered version; 0 when none yet.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, g: ModelGroup) -> GroupOut:
        return cls.model_validate(g, from_attributes=True)


class GroupPage(BaseModel):
    items: list[GroupOut]
    limit: int
    offset: int
    next_offset: int | None


class HistoryOut(BaseModel):
    event_id: str
    event_type: str
    occurred_at: datetime
    producer: str
    payload: dict[str, Any]


def build_api(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="modelgate registrar",
        version="0.2.0",
        description="The catalog of model groups and versions: metrics, model cards, lineage, per-stage status.",
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)
    settings = runtime.settings

    @app.post("/v1/groups", status_code=201, response_model=GroupOut, tags=["groups"], responses={409: {"description": "exists"}})
    async def create_model_group(body: GroupIn) -> GroupOut:
        """Create a model group (registering into an unknown group creates it too, unless configured otherwise)."""
        async with runtime.uow() as uow:
            try:
                group = await create_group(uow.session, body)
            except GroupExists as exc:
                raise HTTPException(409, str(exc)) from None
            await uow.commit()
        return GroupOut.of(group)

    @app.get("/v1/groups", response_model=GroupPage, tags=["groups"])
    async def list_groups(
        q: Annotated[str | None, Query(description="Text in the name or description.")] = None,
        owner: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> GroupPage:
        stmt = select(ModelGroup).order_by(ModelGroup.name)
        if q:
            stmt = stmt.where(or_(ModelGroup.name.icontains(q, autoescape=True), ModelGroup.description.icontains(q, autoescape=True)))
        async with runtime.sessionmaker() as session:
            groups = list(await session.scalars(stmt))
        if owner:  # owners is a JSON list: filtered here (groups are few)
            groups = [g for g in groups if owner in g.owners]
        page = groups[offset : offset + limit]
        more = offset + limit < len(groups)
        return GroupPage(items=[GroupOut.of(g) for g in page], limit=limit, offset=offset, next_offset=offset + limit if more else None)

    @app.get("/v1/groups/{group}", response_model=GroupOut, tags=["groups"])
    async def get_group(group: GroupName) -> GroupOut:
        async with runtime.sessionmaker() as session:
            row = await session.get(ModelGroup, group)
        if row is None:
            raise HTTPException(404, str(UnknownGroup(group)))
        return GroupOut.of(row)

    @app.patch("/v1/groups/{group}", response_model=GroupOut, tags=["groups"])
    async def update_group(group: GroupName, body: GroupChange) -> GroupOut:
        """Change the description, tags or owners; fields left out stay as they are."""
        async with runtime.uow() as uow:
            try:
                row = await change_group(uow.session, group, body)
            except UnknownGroup as exc:
                raise HTTPException(404, str(exc)) from None
            await uow.commit()
        return GroupOut.of(row)

    @app.post(
        "/v1/groups/{group}/versions",
        status_code=201,
        response_model=VersionOut,
        tags=["versions"],
        responses={404: {"description": "unknown group (auto-create off)"}, 409: {"description": "Idempotency-Key reused"},
                   422: {"description": "invalid body, or the artifact does not exist"}},
    )
    async def register_version(
        group: GroupName,
        body: Registration,
        idempotency_key: Annotated[
            str | None,
            Header(max_length=200, description="Retrying with the same key and body returns the same version."),
        ] = None,
    ) -> VersionOut:
        """Register the next version of a model group; announces ModelRegistered.

        Upload the artifact first (e.g. to the `<namespace>-artifacts` bucket): an `s3://` URI whose object does
        not exist is refused.
        """
        if settings.check_artifacts:
            await _check_artifact(runtime, body.artifact_uri)
        for attempt in (1, 2):
            async with runtime.uow() as uow:
                try:
                    version = await register(uow, group, body, settings.auto_create_groups, idempotency_key)
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

    @app.get("/v1/groups/{group}/versions", response_model=list[VersionOut], tags=["versions"])
    async def list_versions(
        group: GroupName,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[VersionOut]:
        """The group's versions, oldest first. Search across groups, filter and sort with GET /v1/versions."""
        async with runtime.sessionmaker() as session:
            if await session.get(ModelGroup, group) is None:
                raise HTTPException(404, str(UnknownGroup(group)))
            query = VersionQuery(group=group, sort="version", order="asc", limit=limit, offset=offset)
            rows, _ = await search_versions(session, query)
            return [VersionOut.of(v) for v in rows]

    @app.get("/v1/versions", response_model=VersionPage, tags=["versions"])
    async def find_versions(query: Annotated[VersionQuery, Query()]) -> VersionPage:
        """Search versions across groups, e.g. `?metric=auc>=0.9&tag=team=risk&stage=prod&stage_status=Deployed`."""
        async with runtime.sessionmaker() as session:
            try:
                rows, next_offset = await search_versions(session, query)
            except InvalidQuery as exc:
                raise HTTPException(422, str(exc)) from None
            return VersionPage(items=[VersionOut.of(v) for v in rows], limit=query.limit, offset=query.offset, next_offset=next_offset)

    @app.get("/v1/groups/{group}/versions/{version}", response_model=VersionOut, tags=["versions"])
    async def get_version(group: GroupName, version: int) -> VersionOut:
        async with runtime.sessionmaker() as session:
            row = await session.get(ModelVersion, f"{group}/{version}")
        if row is None:
            raise HTTPException(404, f"no version {version} in model group '{group}'")
        return VersionOut.of(row)

    @app.get("/v1/groups/{group}/versions/{version}/history", response_model=list[HistoryOut], tags=["versions"])
    async def get_history(group: GroupName, version: int, request: Request) -> list[HistoryOut]:
        """Every event of the version's journey, in the order it happened: the audit trail."""
        async with runtime.sessionmaker() as session:
            if await session.get(ModelVersion, f"{group}/{version}") is None:
                raise HTTPException(404, f"no version {version} in model group '{group}'")
            rows = await session.scalars(
                select(HistoryEntry)
                .where(HistoryEntry.model_version_id == f"{group}/{version}")
                .order_by(HistoryEntry.occurred_at, HistoryEntry.id)
            )
            return [HistoryOut.model_validate(r, from_attributes=True) for r in rows]

    app.include_router(comet_router(runtime))
    return app


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with `detail` one readable sentence per problem (`metrics.auc: ...`) and the raw `errors`."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where, *path = error["loc"]
        field = ".".join(str(p) for p in path) if where == "body" else f"{where} {'.'.join(str(p) for p in path)}"
        message = GROUP_NAME_RULE if error.get("ctx", {}).get("pattern") == GROUP_NAME else error["msg"]
        problems.append(f"{field or 'body'}: {message}")
    return JSONResponse({"detail": "; ".join(problems), "errors": jsonable_encoder(exc.errors())}, status_code=422)


async def _check_artifact(runtime: Runtime, uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return
    if not parsed.netloc or not parsed.path.strip("/"):
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key>")
    try:
        await runtime.aws["s3"].head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except ClientError:
        raise HTTPException(422, f"artifact {uri} does not exist; upload it first (modelgate register --file)") from None
    except BotoCoreError as exc:  # S3 unreachable or timing out: nothing is written, the client may retry
        raise HTTPException(503, f"S3 did not answer ({type(exc).__name__}); try again shortly") from None
