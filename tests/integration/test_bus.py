"""The bus on a real LocalStack: provisioning, filter policies, idempotency, DLQ, outbox, drain."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared import metrics
from shared.aws import AwsClients
from shared.bus import Consumer, Publisher
from shared.db import UnitOfWork, create_tables, make_engine
from shared.events import parse_event
from shared.infra import boto_client, provision
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.signing import KeyRing, Verifier
from shared.topology import CONSUMES
from tests.factories import model_registered, sample_events
from tests.helpers import eventually
from tests.signed import owners


@pytest.fixture
def settings(localstack_endpoint, namespace) -> ServiceSettings:
    return ServiceSettings(service="approver", namespace=namespace, aws_endpoint_url=localstack_endpoint, poll_wait_seconds=1)


@pytest.fixture
def bus(localstack_endpoint, namespace):
    return provision(namespace, endpoint_url=localstack_endpoint, max_receive_count=2)


@pytest.fixture
async def clients(settings):
    async with AwsClients(settings, ("sqs", "sns", "sts", "ssm")) as clients:
        yield clients


@pytest.fixture
async def publisher(clients, bus, localstack_endpoint, namespace) -> Publisher:
    """Publishes as the producers would: each event signed with its owner's key."""
    return Publisher(clients["sns"], bus.topic_arn, await owners(localstack_endpoint, namespace))  # type: ignore[arg-type]


@pytest.fixture
async def sessionmaker(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/bus.db")
    await create_tables(engine)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def make_consumer(clients, bus, sessionmaker, handlers, namespace: str, service="approver") -> Consumer:
    return Consumer(
        sqs=clients["sqs"],
        queue_url=bus.queue_urls[service],
        dlq_url=bus.dlq_urls[service],
        handlers=handlers,
        uow_factory=lambda: UnitOfWork(sessionmaker),
        sessionmaker=sessionmaker,
        verifier=Verifier(KeyRing(clients["ssm"], namespace)),
        max_receive_count=2,
        wait_seconds=1,
    )


async def run_until(consumer: Consumer, condition, timeout: float = 20.0):
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, drain_seconds=5))
    try:
        return await eventually(condition, timeout)
    finally:
        stop.set()
        await task


async def receive_all(clients, queue_url: str, expected: int, timeout: float = 10.0) -> list[dict]:
    got: list[dict] = []

    async def enough():
        response = await clients["sqs"].receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        got.extend(response.get("Messages", []))
        return len(got) >= expected

    await eventually(enough, timeout)
    return got


def test_provisioning_twice_changes_nothing(localstack_endpoint, namespace):
    first = provision(namespace, endpoint_url=localstack_endpoint)
    assert len(first.created) == 4 * 3 + 1  # queue, DLQ and subscription per service; the bucket
    second = provision(namespace, endpoint_url=localstack_endpoint)
    assert second.created == []
    assert boto_client("s3", localstack_endpoint).get_bucket_versioning(Bucket=first.bucket)["Status"] == "Enabled"
    assert second.queue_urls == first.queue_urls
    assert all(url.startswith(f"{localstack_endpoint}/queue/") for url in first.queue_urls.values())  # path-style


async def test_each_event_reaches_exactly_the_services_that_consume_it(bus, clients, publisher):
    events = sample_events()
    await publisher.publish(events)
    for service, types in CONSUMES.items():
        messages = await receive_all(clients, bus.queue_urls[service], len(types))
        received = sorted(parse_event(m["Body"]).event_type for m in messages)
        assert received == sorted(types), service
        assert all(m["MessageAttributes"]["event_type"]["StringValue"] in types for m in messages)


async def test_a_duplicated_event_is_handled_once(bus, clients, sessionmaker, publisher, namespace):
    calls: list[str] = []

    async def handler(event, uow):
        calls.append(event.event_id)

    event = model_registered()
    await publisher.publish([event])
    await publisher.publish([event])
    consumer = make_consumer(clients, bus, sessionmaker, {"ModelRegistered": handler}, namespace)

    async def both_deliveries_taken():
        attrs = await clients["sqs"].get_queue_attributes(
            QueueUrl=bus.queue_urls["approver"], AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
        return calls and all(v == "0" for v in attrs["Attributes"].values())

    await run_until(consumer, both_deliveries_taken)
    assert calls == [event.event_id]


async def test_a_handler_that_keeps_failing_sends_the_event_to_the_dlq_with_the_reason(bus, clients, sessionmaker, publisher, namespace):
    async def broken(event, uow):
        raise RuntimeError("model store on fire")

    event = model_registered()
    await publisher.publish([event])
    consumer = make_consumer(clients, bus, sessionmaker, {"ModelRegistered": broken}, namespace)
    dead: list[dict] = []

    async def in_dlq():
        response = await clients["sqs"].receive_message(
            QueueUrl=bus.dlq_urls["approver"], WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        dead.extend(response.get("Messages", []))
        return dead

    await run_until(consumer, in_dlq, timeout=30)
    assert parse_event(dead[0]["Body"]).event_id == event.event_id
    reason = dead[0]["MessageAttributes"]["dlq_reason"]["StringValue"]
    assert "failed 2 times" in reason and "model store on fire" in reason


async def test_an_unparseable_message_goes_to_the_dlq_and_the_consumer_keeps_going(bus, clients, sessionmaker, publisher, namespace):
    handled: list[str] = []

    async def handler(event, uow):
        handled.append(event.event_id)

    await clients["sqs"].send_message(QueueUrl=bus.queue_urls["approver"], MessageBody="{not json")
    good = model_registered()
    await publisher.publish([good])
    consumer = make_consumer(clients, bus, sessionmaker, {"ModelRegistered": handler}, namespace)

    async def good_one_handled():
        return handled

    await run_until(consumer, good_one_handled)
    dead = await receive_all(clients, bus.dlq_urls["approver"], 1)
    assert dead[0]["Body"] == "{not json"
    assert dead[0]["MessageAttributes"]["dlq_reason"]["StringValue"] == "refused: the message is not JSON"
    assert handled == [good.event_id]


async def test_forged_tampered_and_wrongly_produced_events_are_dead_lettered_and_never_handled(
        bus, clients, sessionmaker, publisher, namespace):
    handled: list[str] = []

    async def handler(event, uow):
        handled.append(event.event_id)

    unsigned = model_registered(version=1)
    await clients["sns"].publish(  # straight to SNS, as anyone on LocalStack can
        TopicArn=bus.topic_arn, Message=unsigned.model_dump_json(),
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": "ModelRegistered"}})
    tampered = json.loads(publisher._signer.sign(model_registered(version=2).model_dump_json()))
    tampered["payload"]["artifact_uri"] = "s3://elsewhere/evil.bin"  # replayed with a change
    wrong = json.loads(model_registered(version=3).model_dump_json()) | {"producer": "deployer"}
    for body in (tampered, wrong):  # straight onto the queue, as anyone with SendMessage can
        await clients["sqs"].send_message(QueueUrl=bus.queue_urls["approver"], MessageBody=json.dumps(body))
    good = model_registered(version=4)
    await publisher.publish([good])
    refused_before = metrics.EVENTS_REFUSED.labels("unsigned")._value.get()
    consumer = make_consumer(clients, bus, sessionmaker, {"ModelRegistered": handler}, namespace)

    async def good_one_handled():
        return handled

    await run_until(consumer, good_one_handled)
    dead = await receive_all(clients, bus.dlq_urls["approver"], 3)
    reasons = {json.loads(m["Body"])["payload"]["version"]: m["MessageAttributes"]["dlq_reason"]["StringValue"] for m in dead}
    assert "unsigned ModelRegistered" in reasons[1]
    assert "does not match" in reasons[2]
    assert "'deployer' may not emit ModelRegistered: only the registrar does" in reasons[3]
    assert handled == [good.event_id]
    assert metrics.EVENTS_REFUSED.labels("unsigned")._value.get() == refused_before + 1


async def test_committed_outbox_events_are_published_and_uncommitted_ones_are_not(bus, clients, sessionmaker, publisher):
    signal = asyncio.Event()
    committed, rolled_back = model_registered(version=1), model_registered(version=2)
    async with UnitOfWork(sessionmaker, signal) as uow:
        uow.publish(committed)
        await uow.commit()
    async with UnitOfWork(sessionmaker, signal) as uow:
        uow.publish(rolled_back)  # leaves without commit: rolled back
    relay = OutboxRelay(sessionmaker, publisher, signal)
    assert await relay.publish_pending() == 1
    assert await relay.publish_pending() == 0
    messages = await receive_all(clients, bus.queue_urls["approver"], 1)
    assert [json.loads(m["Body"])["event_id"] for m in messages] == [committed.event_id]


async def test_stopping_the_consumer_lets_in_flight_work_finish(bus, clients, sessionmaker, publisher, namespace):
    started, finished = asyncio.Event(), []

    async def slow(event, uow):
        started.set()
        await asyncio.sleep(1.5)
        finished.append(event.event_id)

    event = model_registered()
    await publisher.publish([event])
    consumer = make_consumer(clients, bus, sessionmaker, {"ModelRegistered": slow}, namespace)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, drain_seconds=10))
    await asyncio.wait_for(started.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 15)
    assert finished == [event.event_id]
    attrs = await clients["sqs"].get_queue_attributes(
        QueueUrl=bus.queue_urls["approver"], AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    assert set(attrs["Attributes"].values()) == {"0"}


def test_sns_filter_policy_is_set_on_each_subscription(bus, localstack_endpoint):
    sns = boto_client("sns", localstack_endpoint)
    subs = sns.list_subscriptions_by_topic(TopicArn=bus.topic_arn)["Subscriptions"]
    assert len(subs) == 4
    for sub in subs:
        attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        assert json.loads(attributes["FilterPolicy"])["event_type"]
