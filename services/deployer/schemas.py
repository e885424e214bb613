"""What the deployer's HTTP API answers with: deployments, and the body of a rollback request."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.deployer.models import Deployment

Status = Literal["Pending", "Deploying", "Deployed", "Failed", "Superseded", "RolledBack"]


class DeploymentOut(BaseModel):
    deployment_id: str
    group: str
    stage: str
    model_version_id: str
    version: int
    artifact_uri: str
    artifact_digest: str | None = Field(description="sha256:<hex> the artifact must have (pinned at registration); null: not pinned")
    artifact_version_id: str | None = Field(description="The S3 VersionId served; null: the object's latest")
    containers: list[dict[str, Any]] = Field(default_factory=list, description="An inference pipeline's steps in order, each with its pin; empty: one model")
    target: str
    account: str | None = Field(None, description="The AWS account of the stage's pointer and target; null: the deployer's own")
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
            containers=d.containers or [],
            target=d.target,
            account=d.account,
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


class PeriodOut(BaseModel):
    """One period a version served a stage: from its deployment going live until the next one did."""

    version: int
    model_version_id: str
    deployment_id: str
    kind: Literal["rollout", "rollback"]
    served_from: datetime = Field(alias="from", description="When it went live (the pointer named it).")
    served_to: datetime | None = Field(alias="to", description="When the next deployment went live; null: it serves now.")
    live: bool = Field(description="It serves now.")
    target: str
    approval_id: str | None = Field(description="The approval it was deployed on; null for a rollback.")
    requested_by: str | None = Field(description="Who approved it (or 'policy'), or who asked for the rollback.")
    approvers: list[str] = Field(description="Who approved it, one name each; empty for a rollback.")
    artifact_uri: str
    artifact_digest: str | None = Field(description="sha256:<hex> it was pinned to; null: not pinned")
    artifact_version_id: str | None
    endpoint_url: str | None
    reason: str | None = Field(description="Why it was rolled back to, if it was.")

    model_config = {"populate_by_name": True}

    @classmethod
    def of(cls, d: Deployment, until: datetime | None) -> PeriodOut:
        assert d.deployed_at is not None
        approvers = [n.strip() for n in (d.requested_by or "").split(",") if n.strip()] if d.approval_id else []
        return cls(
            version=d.version, model_version_id=d.model_version_id, deployment_id=d.id,
            kind="rollback" if d.rollback else "rollout", served_from=d.deployed_at, served_to=until, live=until is None,
            target=d.target, approval_id=d.approval_id, requested_by=d.requested_by, approvers=approvers,
            artifact_uri=d.artifact_uri, artifact_digest=d.artifact_digest, artifact_version_id=d.artifact_version_id,
            endpoint_url=d.endpoint_url, reason=d.reason if d.rollback else None,
        )


class TimelineOut(BaseModel):
    group: str
    stage: str
    at: datetime | None = Field(description="With ?at=: the time asked about; `items` is then the one period covering it.")
    items: list[PeriodOut] = Field(description="Newest first.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Pass as `offset` for the next (older) page; null on the last page.")


class DriftView(BaseModel):
    """One source's answer to "what serves this stage?"."""

    source: Literal["live", "pointer", "target", "registrar"] = Field(
        description="live: the deployer's record; pointer: Parameter Store; target: asked of the target itself; "
        "registrar: the catalog's Deployed version (added by `modelgate verify`)")
    model_version_id: str | None = Field(description="The version it names; null: none.")
    deployment_id: str | None = None
    detail: str = Field("", description="Where it was read.")
    error: str | None = Field(None, description="It could not be read (then it counts as unknown, not as drift).")


class StageDriftOut(BaseModel):
    group: str
    stage: str
    views: list[DriftView]
    disagreements: list[str] = Field(description="What disagrees with the deployer's live record, one line each.")
    deploying: bool = Field(description="A deployment is under way: disagreements may be its steps, not drift.")
    drifted: bool = Field(description="Something disagrees and no deployment is under way.")


class DriftOut(BaseModel):
    checked_at: datetime
    drifted: int = Field(description="How many of the stages checked drift.")
    stages: list[StageDriftOut]
    next_offset: int | None = Field(None, description="Pass as `offset` for the next page; null on the last page.")


class RolloutOut(BaseModel):
    """A stage's newest rollout (services/deployer/rollout.py)."""

    deployment_id: str
    group: str
    stage: str
    model_version_id: str = Field(description="The version rolling out.")
    live_model_version_id: str | None = Field(description="The version serving the rest, restored on a rollback.")
    strategy: str
    status: str = Field(description="Baking, Paused, Promoted, RolledBack or Aborted.")
    step: int = Field(description="1-based.")
    steps: int
    shares: list[float] = Field(description="The new version's share (%) per step before 100 % (shadow: mirrored).")
    share: float = Field(description="Its share now.")
    router_url: str | None = Field(description="Where the split (or mirrored) traffic goes during the rollout.")
    reason: str | None
    evaluation: dict[str, Any] | None = Field(description="The guardrails' last values (and the new version's requests).")
    abort_requested_by: str | None
    started_at: datetime
    step_started_at: datetime
    evaluated_at: datetime | None
    finished_at: datetime | None
