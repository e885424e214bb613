"""The notifier's HTTP API: the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import select

from services.notifier.models import Delivery
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Role
from shared.limits import LIMITS, Name, PageLimit, PageOffset, one_page

router = APIRouter(tags=["deliveries"])


class DeliveryOut(BaseModel):
    event_id: str
    event_type: str
    correlation_id: str
    channel: str
    recipient: str
    audiences: str
    status: str
    subject: str
    text: str
    error: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None


@router.get("/v1/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(
    session: SessionDep,
    response: Response,
    caller: CurrentPrincipal,
    correlation_id: Name | None = Query(None, description='Only this version\'s ("<group>/<version>").'),
    event_id: Name | None = Query(None, description="Only this event's."),
    channel: Literal["log", "webhook", "email", "sns", "routing"] | None = Query(None),
    status: Literal["queued", "sending", "sent", "failed"] | None = Query(None, description="failed: every try failed."),
    limit: PageLimit = LIMITS.max_page_size,
    offset: PageOffset = 0,
) -> list[DeliveryOut]:
    """One row per (event, channel, recipient), oldest first, a page at a time (X-Next-Offset, when present, is
    the `offset` of the next page). Webhook URLs are shown as host and digest.
    Recipients are people's addresses: reading the log needs the auditor role."""
    caller.require(Role.AUDITOR, to="read the delivery log")
    query = select(Delivery).order_by(Delivery.id)
    if correlation_id:
        query = query.where(Delivery.correlation_id == correlation_id)
    if event_id:
        query = query.where(Delivery.event_id == event_id)
    if channel:
        query = query.where(Delivery.channel == channel)
    if status:
        query = query.where(Delivery.status == status)
    rows = one_page(list(await session.scalars(query.limit(limit + 1).offset(offset))), limit, offset, response)
    return [DeliveryOut.model_validate(d, from_attributes=True) for d in rows]
