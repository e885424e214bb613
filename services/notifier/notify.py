"""Delivering one event to each channel, at most once per (event, channel, recipient)."""

from __future__ import annotations

import httpx
import structlog
from sqlalchemy import select

from services.notifier.messages import render
from services.notifier.models import Delivery
from shared.db import UnitOfWork
from shared.events import Envelope

log = structlog.get_logger()


async def notify(event: Envelope, uow: UnitOfWork, http: httpx.AsyncClient, webhook_url: str | None) -> None:
    text = render(event)
    await _deliver(uow, event, "log", "log", text, _to_log)
    if webhook_url:

        async def post(text: str) -> None:
            response = await http.post(
                webhook_url,
                json={"text": text, "event_id": event.event_id, "event_type": event.event_type},
                headers={"Idempotency-Key": f"{event.event_id}:webhook"},
            )
            response.raise_for_status()

        await _deliver(uow, event, "webhook", webhook_url, text, post)


async def _to_log(text: str) -> None:
    log.info("notification", text=text)


async def _deliver(uow: UnitOfWork, event: Envelope, channel: str, recipient: str, text: str, send) -> None:  # type: ignore[no-untyped-def]
    done = await uow.session.scalar(
        select(Delivery.id).where(
            Delivery.event_id == event.event_id, Delivery.channel == channel, Delivery.recipient == recipient
        )
    )
    if done:
        return
    await send(text)
    uow.session.add(
        Delivery(
            event_id=event.event_id,
            event_type=event.event_type,
            correlation_id=event.correlation_id,
            channel=channel,
            recipient=recipient,
            status="sent",
            text=text,
        )
    )
    await uow.session.flush()
