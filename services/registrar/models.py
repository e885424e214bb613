"""The registrar's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import utcnow


class ModelGroup(Base):
    __tablename__ = "model_groups"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("group_name", "version"),)
    id: Mapped[str] = mapped_column(String(220), primary_key=True)  # "<group>/<version>"
    group_name: Mapped[str] = mapped_column(ForeignKey("model_groups.name"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(Text)
    registered_by: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(40), default="manual")
    framework: Mapped[str | None] = mapped_column(String(80))
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approval_status: Mapped[str] = mapped_column(String(40), default="PendingManualApproval")
    stages: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)  # stage -> {status, at, ...}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HistoryEntry(Base):
    """One event of a version's journey, as the registrar saw it: the audit trail of the version."""

    __tablename__ = "version_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(String(220), index=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    producer: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
