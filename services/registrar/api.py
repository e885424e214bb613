"""The registrar's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import select

from services.registrar.catalog import Registration, UnknownGroup, register
from services.registrar.models import HistoryEntry, ModelVersion
from shared.service import Runtime


class VersionOut(BaseModel):
    model_version_id: str
    group: str
    version: int
    artifact_uri: str
    registered_by: str
    source: str
    framework: str | None
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    model_card: dict[str, Any]
    lineage: dict[str, Any]
    approval_status: str
    stages: dict[str, str]
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
            metrics=v.metrics,
            params=v.params,
            tags=v.tags,
            model_card=v.model_card,
            lineage=v.lineage,
            approval_status=v.approval_status,
            stages={stage: d["status"] for stage, d in v.stages.items()},
            stage_details=v.stages,
            created_at=v.created_at,
        )


class HistoryOut(BaseModel):
    event_id: str
    event_type: str
    occurred_at: datetime
    producer: str
    payload: dict[str, Any]


def build_api(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="modelgate registrar", version="0.1.0", description="The catalog of model versions.")
    settings = runtime.settings

    @app.post("/v1/groups/{group}/versions", status_code=201, response_model=VersionOut, tags=["versions"])
    async def register_version(group: str, body: Registration) -> VersionOut:
        """Register the next version of a model group; announces ModelRegistered."""
        if settings.check_artifacts:
            await _check_artifact(runtime, body.artifact_uri)
        async with runtime.uow() as uow:
            try:
                version = await register(uow, group, body, settings.auto_create_groups)
            except UnknownGroup:
                raise HTTPException(404, f"model group '{group}' does not exist; create it first") from None
            await uow.commit()
        return VersionOut.of(version)

    @app.get("/v1/groups/{group}/versions", response_model=list[VersionOut], tags=["versions"])
    async def list_versions(group: str) -> list[VersionOut]:
        async with runtime.sessionmaker() as session:
            rows = await session.scalars(
                select(ModelVersion).where(ModelVersion.group_name == group).order_by(ModelVersion.version)
            )
            return [VersionOut.of(v) for v in rows]

    @app.get("/v1/groups/{group}/versions/{version}", response_model=VersionOut, tags=["versions"])
    async def get_version(group: str, version: int) -> VersionOut:
        async with runtime.sessionmaker() as session:
            row = await session.get(ModelVersion, f"{group}/{version}")
        if row is None:
            raise HTTPException(404, f"no version {version} in model group '{group}'")
        return VersionOut.of(row)

    @app.get("/v1/groups/{group}/versions/{version}/history", response_model=list[HistoryOut], tags=["versions"])
    async def get_history(group: str, version: int, request: Request) -> list[HistoryOut]:
        """Every event of the version's journey, in the order it happened."""
        async with runtime.sessionmaker() as session:
            if await session.get(ModelVersion, f"{group}/{version}") is None:
                raise HTTPException(404, f"no version {version} in model group '{group}'")
            rows = await session.scalars(
                select(HistoryEntry)
                .where(HistoryEntry.model_version_id == f"{group}/{version}")
                .order_by(HistoryEntry.occurred_at, HistoryEntry.id)
            )
            return [HistoryOut.model_validate(r, from_attributes=True) for r in rows]

    return app


async def _check_artifact(runtime: Runtime, uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return
    try:
        await runtime.aws["s3"].head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except ClientError:
        raise HTTPException(422, f"artifact {uri} does not exist; upload it first (modelgate register --file)") from None
