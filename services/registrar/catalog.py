"""Registering versions and reflecting their journey: the registrar's domain logic."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from services.registrar.models import HistoryEntry, ModelGroup, ModelVersion
from shared.db import UnitOfWork
from shared.events import Envelope, ModelRegistered, ModelRegisteredPayload, model_version_id


class Registration(BaseModel):
    """What a client sends to register a version."""

    artifact_uri: str = Field(min_length=1, examples=["s3://modelgate-artifacts/fraud/model.joblib"])
    registered_by: str = Field(min_length=1, examples=["ana@example.com"])
    metrics: dict[str, float] = Field(default_factory=dict, examples=[{"auc": 0.93}])
    params: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    framework: str | None = None
    source: str = "manual"
    model_card: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)


class UnknownGroup(LookupError):
    pass


async def register(uow: UnitOfWork, group: str, reg: Registration, auto_create_group: bool = True) -> ModelVersion:
    """Adds the next version of `group`, records it in its history and announces it; the caller commits."""
    session = uow.session
    row = await session.scalar(select(ModelGroup).where(ModelGroup.name == group).with_for_update())
    if row is None:
        if not auto_create_group:
            raise UnknownGroup(group)
        row = ModelGroup(name=group, latest_version=0)
        session.add(row)
    row.latest_version += 1
    version = ModelVersion(
        id=model_version_id(group, row.latest_version),
        group_name=group,
        version=row.latest_version,
        stages={},
        **reg.model_dump(),
    )
    session.add(version)
    event = ModelRegistered(
        producer="registrar",
        correlation_id=version.id,
        payload=ModelRegisteredPayload(
            group=group,
            version=version.version,
            model_version_id=version.id,
            artifact_uri=reg.artifact_uri,
            registered_by=reg.registered_by,
            source=reg.source,
            framework=reg.framework,
            metrics=reg.metrics,
            tags=reg.tags,
            lineage=reg.lineage,
            model_card_summary=reg.model_card.get("summary") or reg.model_card.get("intended_use"),
        ),
    )
    record_history(uow, event)
    uow.publish(event)
    return version


def record_history(uow: UnitOfWork, event: Envelope) -> None:
    uow.session.add(
        HistoryEntry(
            model_version_id=event.correlation_id,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            producer=event.producer,
            payload=event.payload.model_dump(mode="json"),
        )
    )


def set_stage(version: ModelVersion, stage: str, status: str, event: Envelope, **details: Any) -> bool:
    """Moves a stage to `status` unless a later event already moved it: events may arrive out of order."""
    current = version.stages.get(stage)
    at = event.occurred_at.isoformat()
    if current and current["at"] > at:
        return False
    version.stages = {**version.stages, stage: {"status": status, "at": at, **details}}
    return True


def approval_status(stages: dict[str, dict[str, Any]]) -> str:
    """SageMaker's single status, derived from the stages: any rejection wins, then any approval."""
    statuses = {s["status"] for s in stages.values()}
    if "Rejected" in statuses:
        return "Rejected"
    if statuses & {"Approved", "Deployed", "DeploymentFailed"}:
        return "Approved"
    return "PendingManualApproval"
