"""The registrar's response models: what its HTTP API answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.registrar.models import ModelGroup, ModelVersion


class VersionOut(BaseModel):
    model_version_id: str = Field(examples=["fraud-detector/3"])
    group: str
    version: int
    artifact_uri: str
    artifact_digest: str | None = Field(None, description="sha256:<hex> of the artifact when registered; null if not pinned (registered before pinning, or not in S3)")
    artifact_version_id: str | None = Field(None, description="The S3 VersionId of the artifact when registered; null in a bucket without versioning")
    containers: list[dict[str, Any]] = Field(default_factory=list, description=(
        "An inference pipeline's steps in order (the last one the model), each with name, artifact_uri, image, "
        "environment and its pin (artifact_digest, artifact_version_id); empty for a single model"))
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
    stages: dict[str, str] = Field(description=(
        "stage -> PendingApproval, Approved, Rejected, Deploying, Deployed (serving now), DeploymentFailed, "
        "Superseded (a newer version took the stage first; superseded_by), Retired (served, then replaced; "
        "replaced_by) or RolledBack (the stage was rolled back from it). Exactly one version per group and stage "
        "reads Deployed once the system settles: the one the Parameter Store pointer names."))
    stage_details: dict[str, dict[str, Any]] = Field(description=(
        "stage -> status, at, producer, and what the status is about: approval_id, decided_by, deployment_id, "
        "superseded_by, replaced_by, endpoint_url, reason"))
    created_at: datetime

    @classmethod
    def of(cls, v: ModelVersion) -> VersionOut:
        return cls(
            model_version_id=v.id,
            group=v.group_name,
            version=v.version,
            artifact_uri=v.artifact_uri,
            artifact_digest=v.artifact_digest,
            artifact_version_id=v.artifact_version_id,
            containers=v.containers or [],
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
    team: str | None = Field(None, description="The team that owns it: its registrants may register into it.")
    shared_with: list[str] = Field(default_factory=list, description='Teams that may read it ("*": every team).')
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
