"""What the approver's HTTP API reads and answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import MetricCheck, RolloutSpec
from shared.identity import Kind


class VoteOut(BaseModel):
    approver: str
    decision: str
    comment: str | None
    via: str
    at: datetime


class ApprovalOut(BaseModel):
    approval_id: str
    model_version_id: str
    group: str
    version: int
    stage: str
    status: str = Field(description="pending, Approved or Rejected")
    policy_rule: str
    required_approvals: int
    approved_by: list[str]
    approver_group: str | None
    eligible_groups: list[str] = Field(description="Groups whose members may vote (the stage's, and the wider one once escalated)")
    escalated: bool
    registered_by: str
    artifact_uri: str
    artifact_digest: str | None = Field(None, description="sha256:<hex> of the artifact when registered; null if not pinned (registered before pinning, or not in S3)")
    artifact_version_id: str | None = Field(None, description="The S3 VersionId of the artifact when registered; null in a bucket without versioning")
    metrics: dict[str, float]
    checks: list[MetricCheck] = Field(description="The version's metrics against the stage's thresholds")
    model_card_summary: str | None
    lineage: dict[str, Any]
    live_model_version_id: str | None = Field(description="What is deployed in this stage now")
    votes: list[VoteOut]
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    closed_reason: str | None = Field(description="Why it closed without a vote: thresholds, expiry, supersession")
    superseded_by: str | None
    decide_url: str
    decide_command: str
    console_url: str | None


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=4000, description="Required for a rejection")


class LinkOut(BaseModel):
    url: str
    approval_id: str
    approver: str
    expires_at: datetime


class LinkInfo(BaseModel):
    approver: str
    expires_at: datetime
    used: bool
    approval: ApprovalOut


Names = Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)]


class PrincipalIn(BaseModel):
    """A new person or service account (`POST /v1/principals`, admin only)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100, description="a-z 0-9 . _ @ + - (normalised: NFKC, lower case)")
    kind: Kind = Kind.PERSON
    roles: Names = Field(default_factory=lambda: ["viewer"], description="viewer, registrant, approver, operator[:<stage>], auditor, admin")
    teams: Names = Field(default_factory=list, description="The teams it belongs to (teams own model groups)")
    groups: Names = Field(default_factory=list, description="The approver groups it decides in")
    oidc_subject: str | None = Field(None, max_length=400, description="Bind to this `sub` of MODELGATE_OIDC_ISSUER's JWTs (a CI pipeline)")
    token: bool = Field(True, description="Issue an API token now (false for an OIDC-only service account)")


class PrincipalPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: Names | None = None
    teams: Names | None = None
    groups: Names | None = None
    disabled: bool | None = None


class CredentialOut(BaseModel):
    id: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class PrincipalOut(BaseModel):
    name: str
    kind: str
    roles: list[str]
    teams: list[str]
    groups: list[str]
    oidc_subject: str | None
    created_at: datetime
    created_by: str
    disabled_at: datetime | None
    credentials: list[CredentialOut] = []
    token: str | None = Field(None, description="The new token: shown this once, never stored")


class StageOut(BaseModel):
    name: str
    approval: str
    rule: str
    thresholds: dict[str, str]
    approvers: int | None
    group: str | None
    expires_after: str | None
    on_expiry: str | None
    escalate_to: str | None
    supersede: bool
    rollout: RolloutSpec | None = None  # how an approved version goes live (None: all at once)
