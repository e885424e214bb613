"""The notifier's AWS channels on LocalStack: SES email (read back from LocalStack's mailbox at
/_aws/ses) and the <namespace>-notifications SNS topic, each delivered once per event and address."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from aiobotocore.session import get_session
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.channels import EmailChannel, LogChannel, SnsChannel
from services.notifier.notify import Notifier, notify
from services.notifier.routing import Routing
from services.notifier.worker import DeliveryWorker
from shared import infra
from shared.db import UnitOfWork, create_tables, make_engine
from tests.factories import sample_events
from tests.helpers import eventually


@pytest.fixture
async def clients(localstack_endpoint):
    session = get_session()
    kwargs = {"endpoint_url": localstack_endpoint, "region_name": "us-east-1", "aws_access_key_id": "test",
              "aws_secret_access_key": "test"}
    async with session.create_client("ses", **kwargs) as ses, session.create_client("sns", **kwargs) as sns:
        yield ses, sns


def mailbox(endpoint: str, sender: str) -> list[dict]:
    return httpx.get(f"{endpoint}/_aws/ses", params={"email": sender}).json()["messages"]


async def test_email_and_sns_notifications_arrive_once_per_address_even_when_the_event_repeats(
    localstack_endpoint, namespace, clients, tmp_path
):
    ses, sns = clients
    provisioned = infra.provision(namespace, endpoint_url=localstack_endpoint, services=())
    sqs = infra.boto_client("sqs", localstack_endpoint)
    inbox_url = sqs.create_queue(QueueName=f"{namespace}-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    infra.boto_client("sns", localstack_endpoint).subscribe(
        TopicArn=provisioned.notifications_topic_arn, Protocol="sqs", Endpoint=inbox_arn,
        Attributes={"FilterPolicy": json.dumps({"audiences": ["on-call"]})},
    )
    sender = f"modelgate-{uuid.uuid4().hex[:8]}@example.com"
    await ses.verify_email_identity(EmailAddress=sender)
    routing = Routing.model_validate({
        "audiences": {"on-call": {"email": ["oncall@example.com"], "sns": True},
                      "team": {"email": ["team@example.com", "oncall@example.com"]}},
        "routes": {"DeploymentFailed": ["on-call", "team"]},
    })
    notifier = Notifier(routing, {"log": LogChannel(), "email": EmailChannel(ses, sender),
                                  "sns": SnsChannel(sns, provisioned.notifications_topic_arn)}, retry_seconds=0)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/notifier.db")
    await create_tables(engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    failed = next(e for e in sample_events() if e.event_type == "DeploymentFailed")
    worker = DeliveryWorker(notifier, lambda: UnitOfWork(sessionmaker))
    for _ in range(2):
        async with UnitOfWork(sessionmaker) as uow:  # as the consumer handles it: the handler only records
            await notify(failed, uow, notifier=notifier)
            await uow.commit()
        while await worker.deliver_once():  # the delivery worker sends what was recorded
            pass
    await engine.dispose()

    mails = mailbox(localstack_endpoint, sender)
    assert sorted(m["Destination"]["ToAddresses"][0] for m in mails) == ["oncall@example.com", "team@example.com"]
    assert mails[0]["Subject"] == "Deployment FAILED: fraud/1 to dev" and "Reason: boom" in mails[0]["Body"]["text_part"]

    async def published():
        return sqs.receive_message(QueueUrl=inbox_url, MessageAttributeNames=["All"], WaitTimeSeconds=1).get("Messages")

    (message,) = await eventually(published, timeout=20)
    envelope = json.loads(message["Body"])
    assert envelope["Subject"] == "Deployment FAILED: fraud/1 to dev"
    assert envelope["MessageAttributes"]["event_type"]["Value"] == "DeploymentFailed"
    sqs.delete_message(QueueUrl=inbox_url, ReceiptHandle=message["ReceiptHandle"])
    assert not sqs.receive_message(QueueUrl=inbox_url, WaitTimeSeconds=2).get("Messages")  # once, not twice
