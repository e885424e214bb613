"""Signed outbound webhooks: what a subscriber relies on, verified with the Standard Webhooks library."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier import webhooks
from services.notifier.bootstrap import bootstrap
from services.notifier.models import Delivery, DeliveryAttempt
from services.notifier.notify import Notifier, notify
from services.notifier.routing import Routing
from services.notifier.settings import NotifierSettings
from services.notifier.worker import DeliveryWorker
from shared.app import build_app
from shared.db import UnitOfWork, create_tables, make_engine, reading
from shared.runtime import Runtime
from tests.factories import sample_events
from tests.principals import ADMIN, AUDITOR, StaticAuthenticator, bearer


def event_of(event_type: str):  # type: ignore[no-untyped-def]
    return next(e for e in sample_events() if e.event_type == event_type)


def test_a_delivery_verifies_with_the_standard_webhooks_library_and_only_with_its_secret():
    secret, other = webhooks.new_secret(), webhooks.new_secret()
    event = event_of("Deployed")
    target = webhooks.Target("https://ci.example.com/hook", "standard", (secret,), None)
    body, headers = webhooks.request(target, event.event_id, event.model_dump_json(), event.event_type)
    assert headers["webhook-id"] == event.event_id
    assert Webhook(secret).verify(body, headers)["event_id"] == event.event_id
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"Deployed", b"Deployeq"), headers)  # changed after signing


def test_during_a_rotation_both_secrets_verify():
    new, old = webhooks.new_secret(), webhooks.new_secret()
    target = webhooks.Target("https://ci.example.com/hook", "standard", (new, old), None)
    body, headers = webhooks.request(target, "msg_1", '{"a": 1}', "Deployed")
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers) == Webhook(old).verify(body, headers) == {"a": 1}


def test_the_github_dispatch_preset_wraps_the_envelope_and_sends_the_token():
    event = event_of("Deployed")
    target = webhooks.Target("https://api.github.com/repos/a/b/dispatches", "github-dispatch", (webhooks.new_secret(),), "ghp_x")
    body, headers = webhooks.request(target, event.event_id, event.model_dump_json(), event.event_type)
    sent = json.loads(body)
    assert sent["event_type"] == "modelgate.Deployed" and sent["client_payload"]["event_id"] == event.event_id
    assert headers["authorization"] == "Bearer ghp_x"


@pytest.mark.parametrize("url, says", [
    ("http://hooks.example.com/x", "must be https"),
    ("https://127.0.0.1/x", "loopback, private or link-local"),
    ("https://10.1.2.3/x", "loopback, private or link-local"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://user:pw@hooks.example.com/x", "credentials in auth_token"),
    ("ftp://hooks.example.com/x", r"not an http\(s\) URL"),
    ("https://" + "a" * 2001, "longer than 2,000"),
])
def test_urls_modelgate_must_not_post_to_are_refused(url, says):
    with pytest.raises(webhooks.BadWebhook, match=says):
        webhooks.check_url(url, allow_private=False)


def test_development_may_use_loopback_but_never_the_metadata_address():
    webhooks.check_url("http://127.0.0.1:9000/hook", allow_private=True)
    with pytest.raises(webhooks.BadWebhook, match="metadata"):
        webhooks.check_url("http://169.254.169.254/", allow_private=True)


def test_filters_pick_event_types_groups_and_stages():
    deployed = event_of("Deployed")  # group and stage of the sample event
    group, stage = deployed.payload.group, deployed.payload.stage
    assert webhooks.matches(deployed, [], [], [])
    assert webhooks.matches(deployed, ["Deployed"], [group], [stage])
    assert not webhooks.matches(deployed, ["ModelRegistered"], [], [])
    assert not webhooks.matches(deployed, [], ["another-group"], [])
    assert not webhooks.matches(event_of("ModelRegistered"), [], [], [stage])  # no stage: a stage filter drops it


class Receiver:
    """Fails the first `failures` requests (503), then verifies each with the secret and keeps the body."""

    def __init__(self, failures: int) -> None:
        self.failures, self.secret, self.received, self.tries = failures, "", [], 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.tries += 1
        if self.failures:
            self.failures -= 1
            return httpx.Response(503)
        self.received.append(Webhook(self.secret).verify(request.content, dict(request.headers)))
        return httpx.Response(204)


async def test_a_subscriber_gets_each_event_once_after_failing_its_first_tries_and_every_try_is_logged(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/notifier.db")
    await create_tables(engine)
    settings = NotifierSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/notifier.db", webhook_url=None,
                                webhook_allow_private=True, webhook_retry_seconds=[0, 0, 0])
    runtime = Runtime(settings, engine, async_sessionmaker(reading(engine), expire_on_commit=False), aws={})
    wiring = await bootstrap(runtime, authenticator=StaticAuthenticator())
    receiver = Receiver(failures=2)
    app = build_app(runtime, wiring)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as client:
        refused = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(AUDITOR))
        assert refused.status_code == 403
        made = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "event_types": ["Deployed"]},
                                 headers=bearer(ADMIN))
        assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
        assert "/h" not in made.json()["url"]  # the path may hold a token: never shown
        receiver.secret = made.json()["secret"]
        notifier: Notifier = wiring.context
        worker = DeliveryWorker(notifier, runtime.uow, http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
        deployed = event_of("Deployed")
        for event in (deployed, deployed, event_of("ApprovalDecided")):  # a repeat, a filtered one
            async with UnitOfWork(runtime.sessionmaker) as uow:
                await notify(event, uow, notifier=notifier)
                await uow.commit()
        for _ in range(5):
            await worker.deliver_once()
        assert [r["event_id"] for r in receiver.received] == [deployed.event_id] and receiver.tries == 3
        log = (await client.get(f"/v1/webhooks/{made.json()['id']}/deliveries", headers=bearer(ADMIN))).json()
        assert [(d["status"], [a["status_code"] for a in d["attempts"]]) for d in log] == [("sent", [503, 503, 204])]
        again = await client.post(f"/v1/webhooks/deliveries/{log[0]['id']}/redeliver", headers=bearer(ADMIN))
        assert again.status_code == 202
        await worker.deliver_once()
        assert [r["event_id"] for r in receiver.received] == [deployed.event_id] * 2  # same webhook-id
    async with runtime.sessionmaker() as session:
        assert len(list(await session.scalars(select(DeliveryAttempt)))) == 4
    await wiring.on_stop()
    await engine.dispose()


async def test_a_delivery_that_keeps_failing_is_given_up_after_the_schedule(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/notifier.db")
    await create_tables(engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    notifier = Notifier(Routing(), {}, webhook_schedule=(timedelta(0), timedelta(0)))
    async with UnitOfWork(sessionmaker) as uow:
        from services.notifier.models import Subscription

        uow.session.add(Subscription(id="s1", url="https://x.example.com/h", secret=webhooks.new_secret(),
                                     event_types=[], groups=[], stages=[], created_by="admin"))
        await uow.commit()
    async with UnitOfWork(sessionmaker) as uow:
        await notify(event_of("Deployed"), uow, notifier=notifier)
        await uow.commit()
    worker = DeliveryWorker(notifier, lambda: UnitOfWork(sessionmaker),
                            http=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))))
    for _ in range(5):
        await worker.deliver_once()
    async with sessionmaker() as session:
        (row,) = await session.scalars(select(Delivery).where(Delivery.channel == "subscription"))
    assert (row.status, row.attempts, row.error) == ("failed", 3, "HTTP 500 from the receiver")
    await engine.dispose()
