"""The deployer's HTTP API: what is live where, and the history of deployments."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI, Query
from pydantic import BaseModel
from sqlalchemy import select

from services.deployer.models import Deployment
from shared.service import Runtime


class DeploymentOut(BaseModel):
    deployment_id: str
    group: str
    stage: str
    model_version_id: str
    version: int
    target: str
    status: str
    previous_model_version_id: str | None
    endpoint_url: str | None
    created_at: datetime


def build_api(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="modelgate deployer", version="0.1.0", description="Deployments per stage.")

    @app.get("/v1/deployments", response_model=list[DeploymentOut], tags=["deployments"])
    async def list_deployments(group: str | None = Query(None)) -> list[DeploymentOut]:
        query = select(Deployment).order_by(Deployment.created_at)
        if group:
            query = query.where(Deployment.group_name == group)
        async with runtime.sessionmaker() as session:
            rows = await session.scalars(query)
            return [
                DeploymentOut(
                    deployment_id=d.id,
                    group=d.group_name,
                    stage=d.stage,
                    model_version_id=d.model_version_id,
                    version=d.version,
                    target=d.target,
                    status=d.status,
                    previous_model_version_id=d.previous_model_version_id,
                    endpoint_url=d.endpoint_url,
                    created_at=d.created_at,
                )
                for d in rows
            ]

    return app
