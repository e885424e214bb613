"""The notifier's delivery log: one row per (event, channel, recipient), recorded before anything is sent.

The row is the idempotency: an event handled twice finds its rows and records nothing again.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import utcnow


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # recorded by the handler; the delivery worker sends it
    SENDING = "sending"  # claimed by a worker at claimed_at; sent again if that worker died (lease expired)
    SENT = "sent"
    RETRYING = "retrying"  # a webhook subscription's attempt failed: tried again at next_attempt_at
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
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)  # status retrying only


class Subscription(Base):
    """A signed outbound webhook (services/notifier/webhooks.py): where, which events, the secrets."""

    __tablename__ = "webhook_subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)  # a secret in itself: never logged, shown as host and digest
    preset: Mapped[str] = mapped_column(String(30), default="standard")
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    stages: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))  # signs too until previous_until
    previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auth_token: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # removed: nothing new is sent to it


class DeliveryAttempt(Base):
    """One try of a subscription's delivery: when, what the receiver answered."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
