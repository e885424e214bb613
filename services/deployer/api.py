"""The deployer's HTTP API: what is live where, the history of deployments, and rollback."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from fastapi import Body, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.deployer.deploy import RollbackRefused, request_rollback
from services.deployer.models import Deployment, Stage
from services.deployer.targets import Target
from shared.service import Runtime

Status = Literal["Pending", "Deploying", "Deployed", "Failed", "Superseded"]


class DeploymentOut(BaseModel):
    deployment_id: str
    group: str
    stage: str
    model_version_id: str
    version: int
    artifact_uri: str
    target: str
    status: Status
    live: bool = Field(description="What the stage serves now.")
    rollback: bool
    previous_model_version_id: str | None = Field(description="What was live in the stage when this went live.")
    endpoint_url: str | None
    approval_id: str | None
    requested_by: str | None = Field(description="Who approved it (or 'policy'), or who asked for the rollback.")
    reason: str | None = Field(description="Why it failed, was superseded, or was rolled back to.")
    attempts: int
    created_at: datetime
    deployed_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, d: Deployment, live_ids: set[str]) -> DeploymentOut:
        return cls(
            deployment_id=d.id,
            group=d.group_name,
            stage=d.stage,
            model_version_id=d.model_version_id,
            version=d.version,
            artifact_uri=d.artifact_uri,
            target=d.target,
            status=d.status,  # type: ignore[arg-type]
            live=d.id in live_ids,
            rollback=d.rollback,
            previous_model_version_id=d.previous_model_version_id,
            endpoint_url=d.endpoint_url,
            approval_id=d.approval_id,
            requested_by=d.requested_by,
            reason=d.reason,
            attempts=d.attempts or 0,
            created_at=d.created_at,
            deployed_at=d.deployed_at,
            finished_at=d.finished_at,
        )


class RollbackIn(BaseModel):
    requested_by: str = Field("api", min_length=1, max_length=200, description="Who asks (kept in the audit trail).")
    reason: str | None = Field(None, max_length=4000, description="Why (kept in the audit trail).")


def build_api(runtime: Runtime, targets: Mapping[str, Target]) -> FastAPI:
    app = FastAPI(title="modelgate deployer", version="0.1.0", description="Deployments per stage, and rollback.")

    async def live_ids(group: str | None) -> set[str]:
        query = select(Stage.live_deployment_id).where(Stage.live_deployment_id.is_not(None))
        if group:
            query = query.where(Stage.group_name == group)
        async with runtime.sessionmaker() as session:
            return set((await session.scalars(query)).all())

    @app.get("/v1/deployments", response_model=list[DeploymentOut], tags=["deployments"])
    async def list_deployments(
        group: str | None = Query(None, description="Only this model group."),
        stage: str | None = Query(None, description="Only this stage."),
        status: Status | None = Query(None, description="Only deployments in this status."),
    ) -> list[DeploymentOut]:
        """Every deployment, oldest first: the audit trail. `live` marks what each stage serves now."""
        query = select(Deployment).order_by(Deployment.created_at, Deployment.id)
        if group:
            query = query.where(Deployment.group_name == group)
        if stage:
            query = query.where(Deployment.stage == stage)
        if status:
            query = query.where(Deployment.status == status)
        live = await live_ids(group)
        async with runtime.sessionmaker() as session:
            return [DeploymentOut.of(d, live) for d in await session.scalars(query)]

    @app.get("/v1/deployments/live", response_model=list[DeploymentOut], tags=["deployments"])
    async def list_live(group: str | None = Query(None, description="Only this model group.")) -> list[DeploymentOut]:
        """What each group's stages serve now, one entry per group and stage."""
        query = select(Deployment).join(Stage, Stage.live_deployment_id == Deployment.id)
        if group:
            query = query.where(Deployment.group_name == group)
        async with runtime.sessionmaker() as session:
            rows = list(await session.scalars(query.order_by(Deployment.group_name, Deployment.stage)))
        return [DeploymentOut.of(d, {d.id}) for d in rows]

    @app.get("/v1/deployments/{deployment_id}", response_model=DeploymentOut, tags=["deployments"])
    async def get_deployment(deployment_id: str) -> DeploymentOut:
        async with runtime.sessionmaker() as session:
            d = await session.get(Deployment, deployment_id)
        if d is None:
            raise HTTPException(404, f"no deployment {deployment_id}; list them with GET /v1/deployments")
        return DeploymentOut.of(d, await live_ids(d.group_name))

    @app.post(
        "/v1/groups/{group}/stages/{stage}/rollback",
        status_code=202,
        response_model=DeploymentOut,
        tags=["deployments"],
        responses={404: {"description": "nothing live in that stage"}, 409: {"description": "nothing earlier, or a deployment in progress"}},
    )
    async def rollback(group: str, stage: str, body: RollbackIn = Body(default_factory=RollbackIn)) -> DeploymentOut:
        """Puts back the version that was live before the current one, through the same path as a deployment
        (target, verification, pointer), announced as Deployed with `rollback: true`. Accepted at once; follow it
        with GET /v1/deployments/{deployment_id}. Rolling back again goes one version further back."""
        async with runtime.uow() as uow:
            try:
                deployment = await request_rollback(uow, group, stage, targets, body.requested_by, body.reason)
            except RollbackRefused as refused:
                raise HTTPException(refused.status, str(refused)) from None
            await uow.commit()
        runtime.state["wake"].set()
        return DeploymentOut.of(deployment, set())

    return app
