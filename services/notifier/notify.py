"""Delivering each event to whom routing names: once per (event, channel, recipient), never silently dropped.

Per event: a `sending` row per recipient is committed first (one transaction), then the messages are sent
at once (each with retries), then the rows become `sent` or `failed` (one transaction). So:
- a repeated or redelivered event finds the row `sent` or `failed` and sends nothing again;
- a notifier killed between sending and recording leaves `sending`; the redelivered event sends again
  (a webhook gets the same Idempotency-Key, so the receiver can drop the repeat; email and SNS have no
  such key: a crash in those few milliseconds can repeat the event's messages, never lose one);
- a `sending` row claimed moments ago is a twin handling in flight: the event is retried later.
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
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from services.notifier.channels import Channel, LogChannel, WebhookChannel
from services.notifier.messages import Message, render
from services.notifier.models import FAILED, SENDING, SENT, Delivery
from services.notifier.routing import Recipient, Routing, load_routing
from services.notifier.settings import DEFAULT_ROUTING
from shared.db import UnitOfWork
from shared.events import Envelope, utcnow

log = structlog.get_logger()


class DeliveryInProgress(Exception):
    """Another handling of the same event is sending this right now: retry the event later."""


@dataclass
class Notifier:
    routing: Routing
    channels: dict[str, Channel]  # the configured ones: routing to an unconfigured channel sends nothing
    default_webhook: str | None = None
    deployer_url: str = "http://127.0.0.1:8083"
    attempts: int = 4
    retry_seconds: float = 0.5
    claim_seconds: float = field(default=45.0)  # longer than every try of one send; shorter than SQS's 60 s


def log_and_webhook(http: httpx.AsyncClient | None, webhook_url: str | None) -> Notifier:
    """The default routing on the log, and on the webhook when one is given."""
    channels: dict[str, Channel] = {"log": LogChannel()}
    if http is not None:
        channels["webhook"] = WebhookChannel(http)
    return Notifier(load_routing(DEFAULT_ROUTING), channels, webhook_url)


async def notify(
    event: Envelope,
    uow: UnitOfWork,
    http: httpx.AsyncClient | None = None,
    webhook_url: str | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Claims every delivery of the event in one transaction, sends them all at once, and leaves the outcomes
    in `uow` for the caller's commit (the consumer's, which also marks the event handled)."""
    notifier = notifier or log_and_webhook(http, webhook_url)
    message = render(event, notifier.deployer_url)
    recipients, unknown = notifier.routing.recipients(event, notifier.default_webhook)
    claimed = await _claim(uow, event, message, recipients, unknown, notifier)
    await uow.commit()  # the claims are durable before anything is sent; nothing is held while sending
    await asyncio.gather(*(_send(event, message, recipient, row, notifier) for recipient, row in claimed))


async def _claim(
    uow: UnitOfWork,
    event: Envelope,
    message: Message,
    recipients: list[Recipient],
    unknown: list[str],
    notifier: Notifier,
) -> list[tuple[Recipient, Delivery]]:
    """The (recipient, row) pairs to send now: new ones, and those whose sender died after claiming them."""
    rows = {
        (row.channel, row.recipient): row
        for row in await uow.session.scalars(select(Delivery).where(Delivery.event_id == event.event_id))
    }
    now = utcnow()
    claimed = []
    for recipient in recipients:
        if recipient.channel not in notifier.channels:  # routed to a channel this notifier is not configured for
            continue
        address = shown_address(recipient)
        row = rows.get((recipient.channel, address))
        if row is None:
            row = _delivery(event, message, recipient.channel, address, ",".join(recipient.audiences), SENDING)
            uow.session.add(row)
        elif row.status in (SENT, FAILED):
            continue
        elif row.claimed_at > now - timedelta(seconds=notifier.claim_seconds):
            raise DeliveryInProgress(f"{recipient.channel} delivery of {event.event_id} is in flight")
        else:
            log.warning("delivery_resumed", channel=recipient.channel, event_id=event.event_id)
            row.claimed_at = now
        claimed.append((recipient, row))
    for audience in unknown:  # routing names an audience it does not define: a failed delivery, for a person to fix
        if ("routing", audience) not in rows:
            log.error("unknown_audience", audience=audience, event_type=event.event_type)
            row = _delivery(event, message, "routing", audience, audience, FAILED)
            row.error = f"no audience {audience!r} in the routing file: add it under `audiences:`"
            uow.session.add(row)
    return claimed


def _delivery(event: Envelope, message: Message, channel: str, address: str, audiences: str, status: str) -> Delivery:
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
    )


async def _send(event: Envelope, message: Message, recipient: Recipient, row: Delivery, notifier: Notifier) -> None:
    channel = notifier.channels[recipient.channel]
    tries = 0
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(notifier.attempts),
            wait=wait_exponential(multiplier=notifier.retry_seconds, max=30),
            reraise=True,
        ):
            with attempt:
                tries += 1
                await channel.send(event, message, recipient, _idempotency_key(event, recipient))
    except Exception as exc:
        row.status, row.error = FAILED, _describe(exc)
        log.error("delivery_failed", channel=recipient.channel, recipient=row.recipient, tries=tries, error=row.error)
    else:
        row.status, row.sent_at, row.error = SENT, utcnow(), None
    row.attempts = (row.attempts or 0) + tries


def shown_address(recipient: Recipient) -> str:
    """The address as the delivery log keeps it: a webhook URL is a secret, so only its host and a digest."""
    if recipient.channel != "webhook":
        return recipient.address
    parsed = urlparse(recipient.address)
    digest = hashlib.sha256(recipient.address.encode()).hexdigest()[:12]
    return f"{parsed.scheme}://{parsed.netloc}/…#{digest}"


def _idempotency_key(event: Envelope, recipient: Recipient) -> str:
    return f"{event.event_id}:{recipient.channel}:{hashlib.sha256(recipient.address.encode()).hexdigest()[:12]}"


def _describe(exc: Exception) -> str:
    """The error without the webhook URL (httpx puts it in its messages)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from the webhook"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: the webhook did not answer"
    return (str(exc) or type(exc).__name__)[:2000]
