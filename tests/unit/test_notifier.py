"""The notifier's promises, without a network: routing by event type, readable messages, each
(event, channel, recipient) recorded by the handler and delivered once by the worker, failures retried and
then recorded, never dropped."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.bootstrap import bootstrap
from services.notifier.channels import LogChannel, WebhookChannel
from services.notifier.messages import render
from services.notifier.models import Delivery, DeliveryStatus
from services.notifier.notify import Notifier, notify
from services.notifier.routing import Routing, load_routing
from services.notifier.settings import DEFAULT_ROUTING, NotifierSettings
from services.notifier.worker import DeliveryWorker
from shared.app import build_app
from shared.bus import dispatch
from shared.db import UnitOfWork, create_tables, make_engine, reading
from shared.events import utcnow
from shared.runtime import Runtime
from shared.topology import CONSUMES
from tests.factories import sample_events
from tests.principals import AUDITOR, StaticAuthenticator, bearer

HOOK = "https://hooks.example.com/services/T000/B000/secret-token"


class Inbox:
    """An email channel that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, event, message, recipient, key) -> None:  # type: ignore[no-untyped-def]
        self.sent.append((recipient.address, message.subject))


class Receiver:
    """A webhook that fails `failures` times, then answers 200; remembers every request."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            self.failures -= 1
            return httpx.Response(503)
        return httpx.Response(200, text="ok")


ROUTING = Routing.model_validate(
    {
        "audiences": {
            "team": {"webhook": "default", "email": ["team@example.com"]},
            "on-call": {"webhook": "default", "email": ["oncall@example.com", "team@example.com"]},
            "ml-leads": {"email": ["leads@example.com"]},
        },
        "routes": {
            "ApprovalRequested": ["approvers", "team"],
            "ApprovalDecided": ["team"],
            "Deployed": ["team"],
            "DeploymentFailed": ["on-call", "team"],
        },
    }
)


@pytest.fixture
async def sessionmaker(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/notifier.db")
    await create_tables(engine)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def notifier_with(receiver: Receiver, inbox: Inbox, routing: Routing = ROUTING) -> Notifier:
    http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    channels = {"log": LogChannel(), "webhook": WebhookChannel(http), "email": inbox}
    return Notifier(routing, channels, default_webhook=HOOK, attempts=3, retry_seconds=0)  # type: ignore[arg-type]


async def handle(sessionmaker, event, notifier: Notifier) -> None:  # type: ignore[no-untyped-def]
    """One handling of the event, without the processed-events ledger (as after a crash before it was marked),
    then the delivery worker until it finds nothing to claim."""
    async with UnitOfWork(sessionmaker) as uow:
        await notify(event, uow, notifier=notifier)
        await uow.commit()
    worker = DeliveryWorker(notifier, lambda: UnitOfWork(sessionmaker))
    while await worker.deliver_once():
        pass


async def deliveries(sessionmaker) -> list[Delivery]:  # type: ignore[no-untyped-def]
    async with sessionmaker() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


def event_of(event_type: str):  # type: ignore[no-untyped-def]
    return next(e for e in sample_events() if e.event_type == event_type)


def test_the_shipped_routing_sends_approvals_to_the_approver_group_deployments_to_the_team_failures_to_on_call():
    routing = load_routing(DEFAULT_ROUTING)
    request = event_of("ApprovalRequested").model_copy(
        update={"payload": event_of("ApprovalRequested").payload.model_copy(update={"approver_group": "model-risk"})}
    )
    assert routing.audience_names(request) == ["model-risk", "team"]
    assert routing.audience_names(event_of("Deployed")) == ["team"]
    assert routing.audience_names(event_of("DeploymentFailed"))[0] == "on-call"


def test_an_address_in_two_audiences_gets_one_message():
    recipients, unknown = ROUTING.recipients(event_of("DeploymentFailed"), HOOK)
    by_channel = sorted((r.channel, r.address) for r in recipients)
    assert by_channel == [
        ("email", "oncall@example.com"), ("email", "team@example.com"), ("log", "log"), ("webhook", HOOK)
    ]
    assert unknown == []


def test_messages_say_what_happened_to_which_version_and_what_to_do():
    failed = render(event_of("DeploymentFailed"))
    assert failed.subject == "Deployment FAILED: fraud/1 to dev"
    assert "boom" in failed.body and "What to do" in failed.body
    deployed = render(event_of("Deployed"))
    assert "fraud/1 is live in dev" in deployed.body and "$" not in deployed.text
    request = render(event_of("ApprovalRequested"))
    assert "modelgate approve a2" in request.body and "Live in test now: nothing yet" in request.body


async def test_each_event_channel_and_recipient_is_delivered_once_even_when_the_event_repeats(sessionmaker):
    receiver, inbox = Receiver(), Inbox()
    event = event_of("DeploymentFailed")
    for _ in range(3):
        await handle(sessionmaker, event, notifier_with(receiver, inbox))
    assert len(receiver.requests) == 1 and sorted(a for a, _ in inbox.sent) == ["oncall@example.com", "team@example.com"]
    rows = await deliveries(sessionmaker)
    assert sorted((d.channel, d.status) for d in rows) == [("email", "sent"), ("email", "sent"), ("log", "sent"), ("webhook", "sent")]


async def test_the_webhook_post_carries_text_event_id_type_and_an_idempotency_key_and_its_url_stays_secret(sessionmaker):
    receiver = Receiver()
    event = event_of("Deployed")
    await handle(sessionmaker, event, notifier_with(receiver, Inbox()))
    (request,) = receiver.requests
    body = httpx.Response(200, content=request.content).json()
    assert body["event_id"] == event.event_id and body["event_type"] == "Deployed" and "fraud/1" in body["text"]
    assert request.headers["Idempotency-Key"].startswith(event.event_id)
    webhook_row = next(d for d in await deliveries(sessionmaker) if d.channel == "webhook")
    assert "secret-token" not in webhook_row.recipient


async def test_a_failing_webhook_is_retried_and_then_recorded_as_failed_without_its_url(sessionmaker):
    receiver = Receiver(failures=10)
    await handle(sessionmaker, event_of("Deployed"), notifier_with(receiver, Inbox()))
    assert len(receiver.requests) == 3
    webhook_row = next(d for d in await deliveries(sessionmaker) if d.channel == "webhook")
    assert webhook_row.status == "failed" and webhook_row.attempts == 3
    assert webhook_row.error == "HTTP 503 from the webhook"


async def test_a_webhook_failing_twice_is_delivered_on_the_third_try(sessionmaker):
    receiver = Receiver(failures=2)
    await handle(sessionmaker, event_of("Deployed"), notifier_with(receiver, Inbox()))
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(keys) == 1
    assert next(d for d in await deliveries(sessionmaker) if d.channel == "webhook").status == "sent"


async def test_a_delivery_left_sending_by_a_crash_is_sent_again_with_the_same_idempotency_key(sessionmaker):
    receiver = Receiver()
    event = event_of("Deployed")
    await handle(sessionmaker, event, notifier_with(receiver, Inbox()))
    async with sessionmaker() as session, session.begin():  # as if killed after sending, before recording
        row = (await session.scalars(select(Delivery).where(Delivery.channel == "webhook"))).one()
        row.status, row.claimed_at = "sending", utcnow() - timedelta(minutes=5)
    await handle(sessionmaker, event, notifier_with(receiver, Inbox()))
    assert len(receiver.requests) == 2
    assert receiver.requests[0].headers["Idempotency-Key"] == receiver.requests[1].headers["Idempotency-Key"]


async def test_a_delivery_being_sent_right_now_by_another_worker_is_left_to_it(sessionmaker):
    receiver = Receiver()
    event = event_of("Deployed")
    await handle(sessionmaker, event, notifier_with(receiver, Inbox()))
    async with sessionmaker() as session, session.begin():
        row = (await session.scalars(select(Delivery).where(Delivery.channel == "webhook"))).one()
        row.status, row.claimed_at = "sending", utcnow()  # its lease has not expired
    await handle(sessionmaker, event, notifier_with(receiver, Inbox()))
    assert len(receiver.requests) == 1


async def test_the_handler_only_records_queued_deliveries_and_wakes_the_worker_once_committed(sessionmaker):
    receiver = Receiver()
    notifier = notifier_with(receiver, Inbox())
    async with UnitOfWork(sessionmaker) as uow:
        await notify(event_of("Deployed"), uow, notifier=notifier)
        assert not notifier.wake.is_set() and len(uow.session.new) == 3  # log, webhook, email: not yet committed
        await uow.commit()
    assert notifier.wake.is_set() and receiver.requests == []
    assert {d.status for d in await deliveries(sessionmaker)} == {DeliveryStatus.QUEUED}


async def test_an_audience_routing_does_not_define_is_recorded_as_a_failed_delivery(sessionmaker):
    routing = Routing.model_validate({"audiences": {}, "routes": {"Deployed": ["nobody"]}})
    await handle(sessionmaker, event_of("Deployed"), notifier_with(Receiver(), Inbox(), routing))
    failed = [d for d in await deliveries(sessionmaker) if d.status == "failed"]
    assert len(failed) == 1 and "nobody" in failed[0].error


async def test_an_events_channels_are_sent_at_once_so_a_slow_webhook_holds_back_no_email(sessionmaker):
    webhook_called, email_sent = asyncio.Event(), asyncio.Event()

    class MeetingInbox(Inbox):
        async def send(self, event, message, recipient, key) -> None:  # type: ignore[no-untyped-def]
            await super().send(event, message, recipient, key)
            email_sent.set()
            await asyncio.wait_for(webhook_called.wait(), timeout=2)  # sent one after the other, this times out

    async def slow_webhook(request: httpx.Request) -> httpx.Response:
        webhook_called.set()
        await asyncio.wait_for(email_sent.wait(), timeout=2)
        return httpx.Response(200)

    inbox = MeetingInbox()
    http = httpx.AsyncClient(transport=httpx.MockTransport(slow_webhook))
    notifier = Notifier(ROUTING, {"webhook": WebhookChannel(http), "email": inbox}, default_webhook=HOOK, attempts=1)
    await handle(sessionmaker, event_of("Deployed"), notifier)
    assert [address for address, _subject in inbox.sent] == ["team@example.com"]
    assert {d.channel: d.status for d in await deliveries(sessionmaker)} == {"webhook": "sent", "email": "sent"}


async def test_the_bootstrap_wires_every_consumed_event_to_the_handler_a_worker_and_the_delivery_log(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/boot.db")
    await create_tables(engine)
    settings = NotifierSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/boot.db", webhook_url=None)
    runtime = Runtime(settings, engine, async_sessionmaker(reading(engine), expire_on_commit=False), aws={})
    wiring = await bootstrap(runtime, authenticator=StaticAuthenticator())
    assert set(wiring.handlers) == set(CONSUMES["notifier"])
    event = event_of("Deployed")
    await dispatch(event, wiring.handlers["Deployed"], runtime.uow)
    stop = asyncio.Event()
    (worker,) = wiring.workers
    task = asyncio.create_task(worker.run(stop))
    app = build_app(runtime, wiring)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier",
                                 headers=bearer(AUDITOR)) as client:
        for _ in range(100):
            rows = (await client.get("/v1/deliveries", params={"event_id": event.event_id})).json()
            if rows and all(r["status"] == "sent" for r in rows):
                break
            await asyncio.sleep(0.02)
    stop.set()
    await task
    await wiring.on_stop()
    await engine.dispose()
    assert [(r["channel"], r["status"]) for r in rows] == [("log", "sent")]
