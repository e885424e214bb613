"""Sending the recorded deliveries: the delivery worker claims `queued` rows, sends them, records the outcome.

A claim sets `sending` and `claimed_at` (a lease) in its own transaction, before anything is sent; on
PostgreSQL it skips rows another replica has locked, so replicas never claim the same row. The claimed
messages go out at once (each with retries), then each row becomes `sent` or `failed`. A notifier killed
while sending leaves `sending`; once the lease expires a worker claims and sends it again (a webhook gets
the same Idempotency-Key, so the receiver can drop the repeat; email and SNS have no such key: a crash in
those few milliseconds can repeat a message, never lose one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import structlog
from sqlalchemy import or_, select
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from services.notifier import webhooks
from services.notifier.messages import Message
from services.notifier.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from services.notifier.notify import Notifier, describe, idempotency_key, shown_address
from shared.db import UnitOfWork
from shared.events import parse_event, utcnow

log = structlog.get_logger()


@dataclass(frozen=True)
class _Claimed:
    id: int
    channel: str
    recipient: str
    subject: str
    text: str
    event: str | None
    event_id: str = ""
    event_type: str = ""
    target: webhooks.Target | None = None  # a webhook subscription's delivery; None when it was removed
    attempts: int = 0


@dataclass(frozen=True)
class _Outcome:
    id: int
    tries: int
    error: str | None
    status_code: int | None = None
    duration_ms: int = 0


@dataclass
class DeliveryWorker:
    notifier: Notifier
    uow_factory: Callable[[], UnitOfWork]
    batch_size: int = 50
    http: httpx.AsyncClient | None = None  # posts to webhook subscriptions

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.deliver_once()
            except Exception:  # the database is away: try again on the next wake or poll
                log.exception("delivery_worker_failed")
                sent = 0
            if not sent:
                await self._sleep(stop)

    async def _sleep(self, stop: asyncio.Event) -> None:
        self.notifier.wake.clear()
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self.notifier.wake.wait())]
        await asyncio.wait(waits, timeout=self.notifier.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def deliver_once(self) -> int:
        """Claims up to batch_size deliveries, sends them at once and records how each went; returns how many."""
        claimed = await self._claim()
        if claimed:
            outcomes = await asyncio.gather(*(self._send(row) for row in claimed))
            await self._record(outcomes)
        return len(claimed)

    async def _claim(self) -> list[_Claimed]:
        expired = utcnow() - timedelta(seconds=self.notifier.lease_seconds)
        query = (
            select(Delivery)
            .where(or_(
                Delivery.status == DeliveryStatus.QUEUED,
                (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_at < expired),
                (Delivery.status == DeliveryStatus.RETRYING) & (Delivery.next_attempt_at <= utcnow()),
            ))
            .order_by(Delivery.id)
            .limit(self.batch_size)
        )
        async with self.uow_factory() as uow:
            if uow.session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(await uow.session.scalars(query))
            for row in rows:
                if row.status == DeliveryStatus.SENDING:
                    log.warning("delivery_resumed", channel=row.channel, event_id=row.event_id)
                row.status, row.claimed_at = DeliveryStatus.SENDING, utcnow()
            claimed = [_Claimed(r.id, r.channel, r.recipient, r.subject, r.text, r.event, r.event_id, r.event_type,
                                await _target(uow, r), r.attempts or 0) for r in rows]
            await uow.commit()
        return claimed

    async def _send(self, row: _Claimed) -> _Outcome:
        if row.channel == "subscription":
            return await self._post(row)
        if row.event is None:
            return _Outcome(row.id, 0, "recorded without its event (before the delivery worker): not sent")
        event = parse_event(row.event)
        recipients, _unknown = self.notifier.routing.recipients(event, self.notifier.default_webhook)
        recipient = next((r for r in recipients if r.channel == row.channel and shown_address(r) == row.recipient), None)
        channel = self.notifier.channels.get(row.channel)
        if recipient is None or channel is None:
            return _Outcome(row.id, 0, f"{row.recipient} on {row.channel} is no longer routed or configured")
        message = Message(row.subject, row.text.removeprefix(f"{row.subject}\n"))
        tries = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.notifier.attempts),
                wait=wait_exponential(multiplier=self.notifier.retry_seconds, max=30),
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    await channel.send(event, message, recipient, idempotency_key(event, recipient))
        except Exception as exc:
            log.error("delivery_failed", channel=row.channel, recipient=row.recipient, tries=tries, error=describe(exc))
            return _Outcome(row.id, tries, describe(exc))
        return _Outcome(row.id, tries, None)

    async def _post(self, row: _Claimed) -> _Outcome:
        """One attempt of a subscription's delivery (the schedule, not this call, retries it)."""
        if row.target is None or row.event is None or self.http is None:
            return _Outcome(row.id, 0, "the subscription was removed: not sent")
        started = time.monotonic()
        status, error = await webhooks.attempt(self.http, row.target, row.event_id, row.event, row.event_type)
        if error:
            log.warning("webhook_attempt_failed", subscription=row.recipient, event_id=row.event_id, error=error)
        return _Outcome(row.id, 1, error, status, int((time.monotonic() - started) * 1000))

    async def _record(self, outcomes: list[_Outcome]) -> None:
        async with self.uow_factory() as uow:
            for outcome in outcomes:
                row = await uow.session.get(Delivery, outcome.id)
                if row is None:
                    continue
                row.attempts = (row.attempts or 0) + outcome.tries
                if row.channel == "subscription" and outcome.tries:
                    uow.session.add(DeliveryAttempt(delivery_id=row.id, status_code=outcome.status_code,
                                                    error=outcome.error, duration_ms=outcome.duration_ms))
                if outcome.error is None:
                    row.status, row.sent_at, row.error = DeliveryStatus.SENT, utcnow(), None
                elif row.channel == "subscription" and outcome.tries and row.attempts <= len(self.notifier.webhook_schedule):
                    row.status, row.error = DeliveryStatus.RETRYING, outcome.error
                    row.next_attempt_at = utcnow() + self.notifier.webhook_schedule[row.attempts - 1]
                else:
                    row.status, row.error = DeliveryStatus.FAILED, outcome.error
            await uow.commit()


async def _target(uow: UnitOfWork, row: Delivery) -> webhooks.Target | None:
    if row.channel != "subscription":
        return None
    sub = await uow.session.get(Subscription, row.recipient)
    if sub is None or sub.removed_at is not None:
        return None
    overlap = sub.previous_secret if sub.previous_until and sub.previous_until > utcnow() else None
    return webhooks.Target(sub.url, sub.preset, (sub.secret, *([overlap] if overlap else [])), sub.auth_token)
