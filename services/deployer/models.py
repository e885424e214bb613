"""The deployer's tables: every deployment (the audit trail), each stage's live deployment, and rollouts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import new_id, utcnow


class DeploymentStatus(StrEnum):
    """Where one deployment stands (the strings are stored and served as they are)."""

    PENDING = "Pending"  # recorded, waiting for its stage
    DEPLOYING = "Deploying"  # its target is being brought to this version
    DEPLOYED = "Deployed"  # went live (it may have been replaced since: see Stage.live_deployment_id)
    FAILED = "Failed"  # the target could not be brought to this version; the stage kept what it had
    SUPERSEDED = "Superseded"  # never started: a newer version was approved for the stage
    ROLLED_BACK = "RolledBack"  # its rollout was stopped (a guardrail broke, or an operator aborted): never live


PENDING, DEPLOYING, DEPLOYED, FAILED, SUPERSEDED, ROLLED_BACK = DeploymentStatus
OPEN = (PENDING, DEPLOYING)


class Deployment(Base):
    """One version to one stage: from an approval, or a rollback."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_timeline", "group_name", "stage", "deployed_at"),)  # routes/timeline.py
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_name: Mapped[str] = mapped_column(String(200), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    model_version_id: Mapped[str] = mapped_column(String(220))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_digest: Mapped[str | None] = mapped_column(String(80))  # sha256:<hex> (shared/pins.py)
    artifact_version_id: Mapped[str | None] = mapped_column(String(1024))  # its S3 VersionId
    # An inference pipeline's steps in order, each with its pin (shared.events.Container); NULL: one model.
    containers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    target: Mapped[str] = mapped_column(String(40))
    account: Mapped[str | None] = mapped_column(String(12))  # the stage's AWS account, when not the deployer's own
    status: Mapped[str] = mapped_column(String(40), index=True)
    approval_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    cause_event_id: Mapped[str | None] = mapped_column(String(36))
    requested_by: Mapped[str | None] = mapped_column(String(400))
    rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    restores_deployment_id: Mapped[str | None] = mapped_column(String(36))  # a rollback: what it puts back
    previous_deployment_id: Mapped[str | None] = mapped_column(String(36))  # what was live when this went live
    previous_model_version_id: Mapped[str | None] = mapped_column(String(220))
    rollback_to_deployment_id: Mapped[str | None] = mapped_column(String(36))  # what a rollback of this restores
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed, was superseded, or was rolled back to
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the RolloutSpec of its approval; None: all at once
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Stage(Base):
    """One group's stage: what is live, the newest version approved for it, and who is deploying to it.

    Its row is the stage's lock: recording an approval, claiming the next deployment and going live all
    lock it. The lease says which deployer process works on the stage, and until when.
    """

    __tablename__ = "stages"
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    live_deployment_id: Mapped[str | None] = mapped_column(String(36))
    newest_version: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Rollout(Base):
    """A deployment going live gradually (services/deployer/rollout.py): its steps and where it stands.

    The router's weights are written from this row, so applying them again after a crash changes nothing;
    each step, and the outcome, is committed with the event that announces it."""

    __tablename__ = "rollouts"
    deployment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(40))
    strategy: Mapped[str] = mapped_column(String(20))
    steps: Mapped[list[float]] = mapped_column(JSON)  # the new version's share (%) per step; shadow: mirrored
    step_index: Mapped[int] = mapped_column(Integer, default=0)  # 0-based, into steps
    share: Mapped[float] = mapped_column(Float, default=0.0)  # the new version's share now
    status: Mapped[str] = mapped_column(String(20), index=True)  # shared.events.RolloutStatus
    live_deployment_id: Mapped[str | None] = mapped_column(String(36))  # what serves the rest, and is restored
    live_model_version_id: Mapped[str | None] = mapped_column(String(220))
    router_url: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the guardrails' last values
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    abort_requested_by: Mapped[str | None] = mapped_column(String(200))  # an operator's abort, for the worker
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
