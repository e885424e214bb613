"""The notifier's delivery log: one row per (event, channel, recipient), recorded before anything is sent.

The row is the idempotency: an event handled twice finds its rows and records nothing again.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import utcnow


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # recorded by the handler; the delivery worker sends it
    SENDING = "sending"  # claimed by a worker at claimed_at; sent again if that worker died (lease expired)
    SENT = "sent"
    FAILED = "failed"  # every try failed (or nobody to send it to): see `error`


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("event_id", "channel", "recipient"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(40))
    correlation_id: Mapped[str] = mapped_column(String(220), index=True)
    channel: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(400))
    audiences: Mapped[str] = mapped_column(String(400), default="")
    status: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event: Mapped[str | None] = mapped_column(Text)  # the event's JSON: what the worker sends it from
