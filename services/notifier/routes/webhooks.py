"""The notifier's HTTP API for webhook subscriptions (services/notifier/webhooks.py): make, list, remove,
test, rotate the secret, read the delivery log with every attempt, deliver again. Admins only: a
subscription receives every event its filter lets through."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier import webhooks
from services.notifier.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from services.notifier.notify import Notifier
from shared.events import EVENT_CLASSES, new_id, utcnow
from shared.http import CurrentPrincipal, SessionDep, UowDep, context_of
from shared.identity import Principal, Role

router = APIRouter(tags=["webhooks"])
NotifierDep = Annotated[Notifier, Depends(context_of)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
SubscriptionId = Annotated[str, Path(max_length=36)]


def _admin(caller: CurrentPrincipal) -> Principal:
    caller.require(Role.ADMIN, to="manage webhook subscriptions")
    return caller


AdminDep = Annotated[Principal, Depends(_admin)]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="https URL the events are POSTed to (kept secret: never shown whole).")
    event_types: list[Name] = Field(default_factory=list, max_length=50, description="Only these (empty: every type).")
    groups: list[Name] = Field(default_factory=list, max_length=200, description="Only these model groups (empty: all).")
    stages: list[Name] = Field(default_factory=list, max_length=50, description="Only events of these stages (empty: all).")
    description: str = Field("", max_length=500)
    preset: Literal["standard", "github-dispatch"] = Field(
        "standard", description="standard: the envelope as body; github-dispatch: GitHub's repository_dispatch body.")
    auth_token: str | None = Field(None, max_length=2000, description="Sent as 'Authorization: Bearer' (e.g. a GitHub token).")

    @field_validator("event_types")
    @classmethod
    def _known(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(EVENT_CLASSES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}: use some of {sorted(EVENT_CLASSES)}")
        return types


class SubscriptionOut(BaseModel):
    id: str
    url: str = Field(description="Host and a digest of the URL.")
    preset: str
    event_types: list[str]
    groups: list[str]
    stages: list[str]
    description: str
    created_by: str
    created_at: datetime
    secret: str | None = Field(None, description="whsec_...: shown once, when made or rotated.")

    @classmethod
    def of(cls, sub: Subscription, secret: str | None = None) -> SubscriptionOut:
        return cls(id=sub.id, url=webhooks.shown_url(sub.url), preset=sub.preset, event_types=sub.event_types,
                   groups=sub.groups, stages=sub.stages, description=sub.description, created_by=sub.created_by,
                   created_at=sub.created_at, secret=secret)


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class SubscriptionDeliveryOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    correlation_id: str
    status: str
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    created_at: datetime
    sent_at: datetime | None


@router.post("/v1/webhooks", status_code=201, response_model=SubscriptionOut)
async def add(body: SubscriptionIn, uow: UowDep, notifier: NotifierDep, caller: AdminDep) -> SubscriptionOut:
    """Subscribes a URL; the answer's `secret` (shown this once) verifies each delivery's signature."""
    try:
        webhooks.check_url(body.url, notifier.webhook_allow_private)
    except webhooks.BadWebhook as exc:
        raise HTTPException(422, str(exc)) from None
    secret = webhooks.new_secret()
    sub = Subscription(id=new_id(), url=body.url, preset=body.preset, description=body.description,
                       event_types=body.event_types, groups=body.groups, stages=body.stages, secret=secret,
                       auth_token=body.auth_token, created_by=caller.name, created_at=utcnow())
    uow.session.add(sub)
    await uow.commit()
    return SubscriptionOut.of(sub, secret)


@router.get("/v1/webhooks", response_model=list[SubscriptionOut])
async def list_subscriptions(session: SessionDep, _: AdminDep) -> list[SubscriptionOut]:
    """The active subscriptions, oldest first."""
    query = select(Subscription).where(Subscription.removed_at.is_(None)).order_by(Subscription.created_at).limit(1000)
    return [SubscriptionOut.of(s) for s in await session.scalars(query)]


async def _found(session: AsyncSession, subscription_id: str) -> Subscription:
    sub = await session.get(Subscription, subscription_id)
    if sub is None or sub.removed_at is not None:
        raise HTTPException(404, f"no webhook subscription {subscription_id}: see GET /v1/webhooks")
    return sub


@router.delete("/v1/webhooks/{subscription_id}", status_code=204)
async def remove(subscription_id: SubscriptionId, uow: UowDep, _: AdminDep) -> None:
    """Nothing new is sent to it; its delivery log stays."""
    (await _found(uow.session, subscription_id)).removed_at = utcnow()
    await uow.commit()


@router.post("/v1/webhooks/{subscription_id}/rotate", response_model=SubscriptionOut)
async def rotate(subscription_id: SubscriptionId, uow: UowDep, _: AdminDep,
                 overlap_hours: Annotated[float, Query(ge=0, le=168)] = 24) -> SubscriptionOut:
    """A new secret; deliveries carry both signatures for `overlap_hours`, while receivers switch over."""
    sub = await _found(uow.session, subscription_id)
    sub.previous_secret, sub.previous_until = sub.secret, utcnow() + timedelta(hours=overlap_hours)
    sub.secret = webhooks.new_secret()
    await uow.commit()
    return SubscriptionOut.of(sub, sub.secret)


@router.post("/v1/webhooks/{subscription_id}/test", status_code=202, response_model=SubscriptionDeliveryOut)
async def test(subscription_id: SubscriptionId, uow: UowDep, notifier: NotifierDep, _: AdminDep) -> SubscriptionDeliveryOut:
    """Queues a signed `WebhookTest` delivery; follow it in GET /v1/webhooks/{id}/deliveries."""
    sub = await _found(uow.session, subscription_id)
    event_id, body = webhooks.ping(sub.id)
    row = Delivery(event_id=event_id, event_type="WebhookTest", correlation_id=f"webhook/{sub.id}",
                   channel="subscription", recipient=sub.id, audiences="", status=DeliveryStatus.QUEUED,
                   subject="WebhookTest", text="", attempts=0, claimed_at=utcnow(), event=body)
    uow.session.add(row)
    uow.after_commit(notifier.wake.set)
    await uow.commit()
    return _delivery_out(row, [])


@router.get("/v1/webhooks/{subscription_id}/deliveries", response_model=list[SubscriptionDeliveryOut])
async def deliveries(subscription_id: SubscriptionId, session: SessionDep, _: AdminDep,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     before_id: Annotated[int | None, Query(ge=1, description="Page: only deliveries older than this id.")] = None,
                     ) -> list[SubscriptionDeliveryOut]:
    """The subscription's deliveries, newest first, each with every attempt and what the receiver answered."""
    query = select(Delivery).where(Delivery.channel == "subscription", Delivery.recipient == subscription_id)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    rows = list(await session.scalars(query.order_by(Delivery.id.desc()).limit(limit)))
    attempts: dict[int, list[DeliveryAttempt]] = {r.id: [] for r in rows}
    if rows:
        found = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(attempts)).order_by(DeliveryAttempt.id)
        for a in await session.scalars(found):
            attempts[a.delivery_id].append(a)
    return [_delivery_out(r, attempts[r.id]) for r in rows]


@router.post("/v1/webhooks/deliveries/{delivery_id}/redeliver", status_code=202, response_model=SubscriptionDeliveryOut)
async def redeliver(delivery_id: Annotated[int, Path(ge=1, le=2**31 - 1)], uow: UowDep, notifier: NotifierDep, _: AdminDep) -> SubscriptionDeliveryOut:
    """Sends a delivery again (same webhook-id, so a receiver that has it already can drop it)."""
    row = await uow.session.get(Delivery, delivery_id)
    if row is None or row.channel != "subscription":
        raise HTTPException(404, f"no webhook delivery {delivery_id}: see GET /v1/webhooks/{{id}}/deliveries")
    await _found(uow.session, row.recipient)
    if row.status == DeliveryStatus.SENDING:
        raise HTTPException(409, f"delivery {delivery_id} is being sent right now; ask again once it is done")
    row.status, row.next_attempt_at, row.claimed_at = DeliveryStatus.QUEUED, None, utcnow()
    uow.after_commit(notifier.wake.set)
    await uow.commit()
    return _delivery_out(row, [])


def _delivery_out(row: Delivery, attempts: list[DeliveryAttempt]) -> SubscriptionDeliveryOut:
    return SubscriptionDeliveryOut(
        id=row.id, event_id=row.event_id, event_type=row.event_type, correlation_id=row.correlation_id,
        status=row.status, next_attempt_at=row.next_attempt_at, created_at=row.created_at or utcnow(),
        sent_at=row.sent_at,
        attempts=[AttemptOut(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms) for a in attempts],
    )
