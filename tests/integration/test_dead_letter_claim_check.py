"""Dead-lettering always succeeds, on a real LocalStack: a message too large for the DLQ once the reason is
added keeps its body in S3 (claim check) and carries the reason; one with many attributes stays within
SQS's ten; `modelgate dlq list` and `redrive` read the claim-checked body back."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from modelgate.cli import app as cli
from shared.aws import AwsClients
from shared.bus import Consumer
from shared.db import UnitOfWork, create_tables, make_engine
from shared.infra import boto_client, provision
from shared.settings import ServiceSettings
from shared.signing import KeyRing, Verifier
from tests.helpers import eventually

QUEUE_LIMIT = 262_144  # SQS's MaximumMessageSize before 2025, and the consumer's default


@pytest.fixture
def bus(localstack_endpoint, namespace):
    """The queues with SQS's long-standing 256 KiB MaximumMessageSize (LocalStack's default is 1 MiB)."""
    provisioned = provision(namespace, endpoint_url=localstack_endpoint, max_receive_count=2)
    sqs = boto_client("sqs", localstack_endpoint)
    for url in (provisioned.queue_urls["approver"], provisioned.dlq_urls["approver"]):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": str(QUEUE_LIMIT)})
    return provisioned


@pytest.fixture
async def clients(localstack_endpoint, namespace):
    settings = ServiceSettings(service="approver", namespace=namespace, aws_endpoint_url=localstack_endpoint)
    async with AwsClients(settings, ("sqs", "ssm", "s3")) as clients:
        yield clients


@pytest.fixture
async def consumer(clients, bus, namespace, tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await create_tables(engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    consumer = Consumer(
        sqs=clients["sqs"], queue_url=bus.queue_urls["approver"], dlq_url=bus.dlq_urls["approver"], handlers={},
        uow_factory=lambda: UnitOfWork(sessionmaker), sessionmaker=sessionmaker,
        verifier=Verifier(KeyRing(clients["ssm"], namespace)), max_receive_count=2, wait_seconds=0,
    )
    consumer.s3, consumer.claim_check_bucket = clients["s3"], bus.bucket
    yield consumer
    await engine.dispose()


async def dead_letters(clients, bus, expected: int = 1) -> list[dict]:
    got: list[dict] = []

    async def arrived():
        response = await clients["sqs"].receive_message(
            QueueUrl=bus.dlq_urls["approver"], MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0,
            MessageAttributeNames=["All"])
        got.extend(response.get("Messages", []))
        return len(got) >= expected

    await eventually(arrived, timeout=30)
    return got


async def run_once(consumer: Consumer, until) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, drain_seconds=5))
    try:
        await until()
    finally:
        stop.set()
        await task


async def test_a_message_near_the_size_limit_is_dead_lettered_with_its_reason_and_its_body_in_s3(
    clients, bus, consumer, localstack_endpoint, namespace, monkeypatch
):
    body = json.dumps({"event_type": "ModelRegistered", "padding": "x" * (QUEUE_LIMIT - 300)})
    attributes = {"event_type": {"DataType": "String", "StringValue": "ModelRegistered"}}
    await clients["sqs"].send_message(QueueUrl=bus.queue_urls["approver"], MessageBody=body, MessageAttributes=attributes)
    dead: list[dict] = []

    async def dead_lettered():
        dead.extend(await dead_letters(clients, bus))
        return dead

    await run_once(consumer, dead_lettered)
    message = dead[0]
    assert json.loads(message["Body"])[0] == "software.amazon.payloadoffloading.PayloadS3Pointer"
    assert "refused" in message["MessageAttributes"]["dlq_reason"]["StringValue"]  # unsigned: refused at once
    assert message["MessageAttributes"]["ExtendedPayloadSize"]["StringValue"] == str(len(body))

    monkeypatch.setenv("AWS_ENDPOINT_URL", localstack_endpoint)
    monkeypatch.setenv("MODELGATE_NAMESPACE", namespace)
    monkeypatch.setenv("MODELGATE_APPROVER_URL", "http://127.0.0.1:9")  # not running: its outbox is not read
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["dlq", "list", "--service", "approver", "--json"])
    assert listed.exit_code == 0, listed.output
    entries = [e for e in json.loads(listed.stdout) if e["message_id"] == message["MessageId"]]
    assert entries and entries[0]["body"] == body and "refused" in entries[0]["reason"]

    redriven = await asyncio.to_thread(CliRunner().invoke, cli, ["dlq", "redrive", "approver", "--json"])
    assert redriven.exit_code == 0, redriven.output
    back: list[dict] = []

    async def redriven_back():
        response = await clients["sqs"].receive_message(QueueUrl=bus.queue_urls["approver"], WaitTimeSeconds=1,
                                                        MessageAttributeNames=["All"])
        back.extend(response.get("Messages", []))
        return back

    await eventually(redriven_back, timeout=20)
    assert [m["Body"] for m in back] == [body]
    assert back[0]["MessageAttributes"] == attributes


async def test_a_message_with_ten_attributes_is_dead_lettered_within_sqs_limit_of_ten(clients, bus, consumer):
    attributes = {f"a{i}": {"DataType": "String", "StringValue": "v" * 200} for i in range(10)}
    await clients["sqs"].send_message(QueueUrl=bus.queue_urls["approver"], MessageBody="{not json",
                                      MessageAttributes=attributes)
    dead: list[dict] = []

    async def dead_lettered():
        dead.extend(await dead_letters(clients, bus))
        return dead

    await run_once(consumer, dead_lettered)
    kept = dead[0]["MessageAttributes"]
    assert len(kept) <= 10 and "not JSON" in kept["dlq_reason"]["StringValue"]
    assert dead[0]["Body"] == "{not json"
