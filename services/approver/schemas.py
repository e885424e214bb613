"""What the approver's HTTP API reads and answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.events import MetricCheck


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


class ApproverOut(BaseModel):
    name: str
    groups: list[str]


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
