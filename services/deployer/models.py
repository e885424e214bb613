"""The deployer's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import new_id, utcnow


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    group_name: Mapped[str] = mapped_column(String(200), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    model_version_id: Mapped[str] = mapped_column(String(220))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(40))  # Deployed | Failed | Superseded
    approval_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    previous_model_version_id: Mapped[str | None] = mapped_column(String(220))
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
