"""The approver's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import new_id, utcnow


class KnownVersion(Base):
    """What the approver knows of a registered version (from ModelRegistered)."""

    __tablename__ = "known_versions"
    model_version_id: Mapped[str] = mapped_column(String(220), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    registered_by: Mapped[str] = mapped_column(String(200))
    artifact_uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_card_summary: Mapped[str | None] = mapped_column(Text)


class ApprovalRequest(Base):
    __tablename__ = "approval_requests"
    __table_args__ = (UniqueConstraint("model_version_id", "stage"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("known_versions.model_version_id"))
    stage: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(40), index=True)  # pending | Approved | Rejected
    policy_rule: Mapped[str] = mapped_column(Text)
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    approver_group: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("approval_id", "approver"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"))
    approver: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LiveVersion(Base):
    """What is deployed in each stage of each group, as announced by Deployed."""

    __tablename__ = "live_versions"
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(String(220))
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime)
