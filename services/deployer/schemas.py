"""What the deployer's HTTP API answers with: deployments, and the body of a rollback request."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from services.deployer.models import Deployment

Status = Literal["Pending", "Deploying", "Deployed", "Failed", "Superseded"]


class DeploymentOut(BaseModel):
    deployment_id: str
    group: str
    stage: str
    model_version_id: str
    version: int
    artifact_uri: str
    artifact_digest: str | None = Field(description="sha256:<hex> the artifact must have (pinned at registration); null: not pinned")
    artifact_version_id: str | None = Field(description="The S3 VersionId served; null: the object's latest")
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
            artifact_digest=d.artifact_digest,
            artifact_version_id=d.artifact_version_id,
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
    requested_by: str | None = Field(None, max_length=200, description="Optional: your own name (the credential names who asks).")
    reason: str | None = Field(None, max_length=4000, description="Why (kept in the audit trail).")
