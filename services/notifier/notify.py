"""Recording each event's deliveries: once per (event, channel, recipient), never silently dropped.

The handler `notify` only records: in the consumer's transaction it adds a `queued` row per recipient (the
rendered message and the event's JSON on it) and wakes the delivery worker once that transaction commits.
It sends nothing and never commits. A repeated or redelivered event finds its rows and records nothing again,
so each notification goes out once per event and channel. The sending is services/notifier/worker.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlparse

import httpx
import structlog
from sqlalchemy import select

from services.notifier.channels import Channel
from services.notifier.messages import Message, render
from services.notifier.models import Delivery, DeliveryStatus, Subscription
from services.notifier.routing import ROUTED, Recipient, Routing
from services.notifier.webhooks import SCHEDULE, matches
from shared.db import UnitOfWork
from shared.events import Envelope, utcnow

log = structlog.get_logger()


@dataclass
class Notifier:
    """The notifier's own parts: who is told what (routing), on which channels, and the worker's wake-up."""

    routing: Routing
    channels: dict[str, Channel]  # the configured ones: routing to an unconfigured channel sends nothing
    default_webhook: str | None = None
    deployer_url: str = "http://127.0.0.1:8083"
    attempts: int = 4
    retry_seconds: float = 0.5
    lease_seconds: float = 45.0  # longer than every try of one send: then a claim is taken to be a dead sender's
    poll_seconds: float = 5.0  # how often the worker looks for expired leases when nothing woke it
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    webhook_schedule: tuple[timedelta, ...] = SCHEDULE  # waits before a subscription's 2nd, 3rd, ... attempt
    webhook_allow_private: bool = False  # development: http and loopback/private webhook URLs


async def notify(event: Envelope, uow: UnitOfWork, notifier: Notifier) -> None:
    """Records a `queued` delivery per recipient and webhook subscription the event has no row for yet, in
    `uow` (the caller commits)."""
    message = render(event, notifier.deployer_url)
    recipients, unknown = notifier.routing.recipients(event, notifier.default_webhook) \
        if event.event_type in ROUTED else ([], [])
    recorded = {
        (row.channel, row.recipient)
        for row in await uow.session.scalars(select(Delivery).where(Delivery.event_id == event.event_id))
    }
    subscriptions = list(await uow.session.scalars(select(Subscription).where(Subscription.removed_at.is_(None))))
    body = event.model_dump_json()
    queued = 0
    for recipient in recipients:
        if recipient.channel not in notifier.channels:  # routed to a channel this notifier is not configured for
            continue
        address = shown_address(recipient)
        if (recipient.channel, address) in recorded:
            continue
        audiences = ",".join(recipient.audiences)
        uow.session.add(_delivery(event, message, recipient.channel, address, audiences, DeliveryStatus.QUEUED, body))
        queued += 1
    for audience in unknown:  # routing names an audience it does not define: a failed delivery, for a person to fix
        if ("routing", audience) not in recorded:
            log.error("unknown_audience", audience=audience, event_type=event.event_type)
            row = _delivery(event, message, "routing", audience, audience, DeliveryStatus.FAILED, None)
            row.error = f"no audience {audience!r} in the routing file: add it under `audiences:`"
            uow.session.add(row)
    for sub in subscriptions:
        if ("subscription", sub.id) not in recorded and matches(event, sub.event_types, sub.groups, sub.stages):
            uow.session.add(_delivery(event, message, "subscription", sub.id, "", DeliveryStatus.QUEUED, body))
            queued += 1
    if queued:
        uow.after_commit(notifier.wake.set)


def _delivery(
    event: Envelope, message: Message, channel: str, address: str, audiences: str, status: str, body: str | None
) -> Delivery:
    return Delivery(
        event_id=event.event_id,
        event_type=event.event_type,
        correlation_id=event.correlation_id,
        channel=channel,
        recipient=address,
        audiences=audiences,
        status=status,
        subject=message.subject,
        text=message.text,
        attempts=0,
        claimed_at=utcnow(),
        event=body,
    )


def shown_address(recipient: Recipient) -> str:
    """The address as the delivery log keeps it: a webhook URL is a secret, so only its host and a digest."""
    if recipient.channel != "webhook":
        return recipient.address
    parsed = urlparse(recipient.address)
    digest = hashlib.sha256(recipient.address.encode()).hexdigest()[:12]
    return f"{parsed.scheme}://{parsed.netloc}/…#{digest}"


def idempotency_key(event: Envelope, recipient: Recipient) -> str:
    return f"{event.event_id}:{recipient.channel}:{hashlib.sha256(recipient.address.encode()).hexdigest()[:12]}"


def describe(exc: Exception) -> str:
    """The error without the webhook URL (httpx puts it in its messages)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from the webhook"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: the webhook did not answer"
    return (str(exc) or type(exc).__name__)[:2000]
