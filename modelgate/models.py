"""What the SDK answers with: pydantic models the SDK owns (the services' internals stay out of it).

Promises: each model reads what the services answer today and tolerates fields they add later (unknown
fields are ignored, new optional ones default), so upgrading a service never breaks a training script.
Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Version(_Read):
    """One registered model version, with where it stands in each stage."""

    model_version_id: str
    group: str
    version: int
    artifact_uri: str
    artifact_digest: str | None = None
    artifact_version_id: str | None = None
    containers: list[dict[str, Any]] = Field(
        default_factory=list, description="an inference pipeline's steps in order, the model last; empty: one model")
    registered_by: str = ""
    source: str = ""
    framework: str | None = None
    description: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    model_card: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    approval_status: str = "PendingManualApproval"
    stages: dict[str, str] = Field(default_factory=dict, description="stage -> status (PendingApproval, Deployed, ...)")
    stage_details: dict[str, dict[str, Any]] = Field(default_factory=dict)
    created_at: datetime | None = None

    def status(self, stage: str) -> str | None:
        """This version's status in `stage`, None when it has not been put up for it."""
        return self.stages.get(stage)


class HistoryEntry(_Read):
    """One event in a version's history, as the registrar recorded it."""

    event_id: str
    event_type: str
    occurred_at: datetime
    producer: str
    payload: dict[str, Any] = Field(default_factory=dict)


class Approval(_Read):
    """An approval request for one version and stage, and its votes."""

    approval_id: str
    model_version_id: str
    group: str
    version: int
    stage: str
    status: str = Field(description="pending, Approved or Rejected")
    policy_rule: str = ""
    required_approvals: int = 0
    approved_by: list[str] = Field(default_factory=list)
    approver_group: str | None = None
    registered_by: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    live_model_version_id: str | None = None
    created_at: datetime | None = None
    decided_at: datetime | None = None
    closed_reason: str | None = None
    superseded_by: str | None = None
    decide_url: str | None = None
    console_url: str | None = None


class Deployment(_Read):
    """One deployment (or rollback) of a version to a stage."""

    deployment_id: str
    group: str
    stage: str
    model_version_id: str
    version: int
    artifact_uri: str = ""
    artifact_digest: str | None = None
    target: str = ""
    status: str = Field(description="Pending, Deploying, Deployed, Failed, Superseded or RolledBack (its rollout was stopped)")
    live: bool = False
    rollback: bool = False
    previous_model_version_id: str | None = None
    endpoint_url: str | None = None
    approval_id: str | None = None
    requested_by: str | None = None
    reason: str | None = None
    created_at: datetime | None = None
    deployed_at: datetime | None = None
    finished_at: datetime | None = None


class Period(_Read):
    """One period a version served a stage: from its deployment going live until the next one did."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: int
    model_version_id: str
    deployment_id: str
    kind: str = Field(description="rollout or rollback")
    served_from: datetime = Field(alias="from")
    served_to: datetime | None = Field(None, alias="to", description="None: it serves now")
    live: bool = False
    target: str = ""
    approval_id: str | None = None
    requested_by: str | None = None
    approvers: list[str] = Field(default_factory=list)
    artifact_uri: str = ""
    artifact_digest: str | None = None
    endpoint_url: str | None = None
    reason: str | None = None


class GateCode(IntEnum):
    """`modelgate gate`'s exit codes, the same numbers as the CLI (docs/cli.md)."""

    OPEN = 0
    NOT_FOUND = 4
    PENDING = 10
    REJECTED = 11
    NOT_REQUESTED = 12
    DEPLOYMENT_FAILED = 13
    SUPERSEDED = 14
    RETIRED = 15


class GateVerdict(_Read):
    """Whether a version may go to a stage, and why (or why not) in one sentence."""

    model_version_id: str
    stage: str
    status: str | None
    code: GateCode
    reason: str

    @property
    def open(self) -> bool:
        return self.code is GateCode.OPEN

    def __bool__(self) -> bool:
        return self.open
