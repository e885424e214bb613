"""Delivering each event to whom routing names: once per (event, channel, recipient), never silently dropped.

Per recipient: a `sending` row is committed first, then the message is sent (with retries), then the row
becomes `sent` or `failed`. So:
- a repeated or redelivered event finds the row `sent` or `failed` and sends nothing again;
- a notifier killed between sending and recording leaves `sending`; the redelivered event sends again
  (a webhook gets the same Idempotency-Key, so the receiver can drop the repeat; email and SNS have no
  such key: a crash in those few milliseconds can repeat one message, never lose it);
- a `sending` row claimed moments ago is a twin delivery in flight: the event is retried later.
"""

from __future__ import annotations

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
    notifier = notifier or log_and_webhook(http, webhook_url)
    message = render(event, notifier.deployer_url)
    recipients, unknown = notifier.routing.recipients(event, notifier.default_webhook)
    await uow.commit()  # each delivery below is its own small transaction, committed before anything is sent
    for audience in unknown:
        await _record_unroutable(uow, event, message, audience)
    for recipient in recipients:
        channel = notifier.channels.get(recipient.channel)
        if channel is not None:
            await _deliver(uow, event, message, recipient, channel, notifier)


async def _deliver(
    uow: UnitOfWork, event: Envelope, message: Message, recipient: Recipient, channel: Channel, notifier: Notifier
) -> None:
    address = shown_address(recipient)
    row = await uow.session.scalar(
        select(Delivery).where(
            Delivery.event_id == event.event_id, Delivery.channel == recipient.channel, Delivery.recipient == address
        )
    )
    now = utcnow()
    if row is not None and row.status in (SENT, FAILED):
        await uow.commit()
        return
    if row is not None and row.claimed_at > now - timedelta(seconds=notifier.claim_seconds):
        await uow.commit()
        raise DeliveryInProgress(f"{recipient.channel} delivery of {event.event_id} is in flight")
    if row is None:
        row = Delivery(
            event_id=event.event_id,
            event_type=event.event_type,
            correlation_id=event.correlation_id,
            channel=recipient.channel,
            recipient=address,
            audiences=",".join(recipient.audiences),
            status=SENDING,
            subject=message.subject,
            text=message.text,
            attempts=0,
            claimed_at=now,
        )
        uow.session.add(row)
    else:  # its sender died after claiming it: send it again
        log.warning("delivery_resumed", channel=recipient.channel, event_id=event.event_id)
        row.claimed_at = now
    await uow.commit()
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
        log.error("delivery_failed", channel=recipient.channel, recipient=address, tries=tries, error=row.error)
    else:
        row.status, row.sent_at, row.error = SENT, utcnow(), None
    row.attempts = (row.attempts or 0) + tries
    await uow.commit()


async def _record_unroutable(uow: UnitOfWork, event: Envelope, message: Message, audience: str) -> None:
    """Routing names an audience it does not define: recorded as a failed delivery, for a person to fix."""
    exists = await uow.session.scalar(
        select(Delivery.id).where(
            Delivery.event_id == event.event_id, Delivery.channel == "routing", Delivery.recipient == audience
        )
    )
    if not exists:
        log.error("unknown_audience", audience=audience, event_type=event.event_type)
        uow.session.add(
            Delivery(
                event_id=event.event_id,
                event_type=event.event_type,
                correlation_id=event.correlation_id,
                channel="routing",
                recipient=audience,
                audiences=audience,
                status=FAILED,
                subject=message.subject,
                text=message.text,
                error=f"no audience {audience!r} in the routing file: add it under `audiences:`",
                attempts=0,
            )
        )
    await uow.commit()


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
