"""Deploying an approved version to a stage: the Parameter Store pointer first, then the stage's target."""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy import select

from services.deployer.models import Deployment
from shared.bus import Skip
from shared.db import UnitOfWork
from shared.events import ApprovalDecided, Deployed, DeployedPayload, utcnow
from shared.topology import parameter_name

log = structlog.get_logger()


async def live_deployment(uow: UnitOfWork, group: str, stage: str) -> Deployment | None:
    return await uow.session.scalar(
        select(Deployment)
        .where(Deployment.group_name == group, Deployment.stage == stage, Deployment.status == "Deployed")
        .order_by(Deployment.created_at.desc())
        .limit(1)
    )


async def on_approval_decided(event: ApprovalDecided, uow: UnitOfWork, ssm: Any, targets: dict[str, str]) -> None:
    p = event.payload
    if p.decision != "Approved":
        raise Skip(f"{p.model_version_id} was {p.decision} for {p.stage}: nothing to deploy")
    if await uow.session.scalar(select(Deployment.id).where(Deployment.approval_id == p.approval_id)):
        raise Skip(f"approval {p.approval_id} was already deployed")
    previous = await live_deployment(uow, p.group, p.stage)
    deployed_at = utcnow()
    name = parameter_name(p.group, p.stage)
    pointer = {
        "model_version_id": p.model_version_id,
        "version": p.version,
        "artifact_uri": p.artifact_uri,
        "deployed_at": deployed_at.isoformat(),
    }
    await ssm.put_parameter(Name=name, Value=json.dumps(pointer), Type="String", Overwrite=True)
    target = targets.get(p.stage, "parameter-store")
    deployment = Deployment(
        group_name=p.group,
        stage=p.stage,
        model_version_id=p.model_version_id,
        version=p.version,
        artifact_uri=p.artifact_uri,
        target=target,
        status="Deployed",
        approval_id=p.approval_id,
        previous_model_version_id=previous.model_version_id if previous else None,
    )
    uow.session.add(deployment)
    await uow.session.flush()
    uow.publish(
        event.caused(
            Deployed,
            "deployer",
            DeployedPayload(
                group=p.group,
                version=p.version,
                model_version_id=p.model_version_id,
                deployment_id=deployment.id,
                stage=p.stage,
                target=target,
                artifact_uri=p.artifact_uri,
                parameter_name=name,
                previous_model_version_id=deployment.previous_model_version_id,
                previous_version=previous.version if previous else None,
                rollback=p.rollback,
                deployed_at=deployed_at,
            ),
        )
    )
