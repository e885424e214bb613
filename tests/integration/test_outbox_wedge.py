"""The outbox never wedges, on a real LocalStack: an event too large for SNS is refused before commit (422),
and a row the bus refuses anyway is set aside with the reason while the rows after it keep flowing."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from services.registrar.models import ModelVersion
from shared.aws import AwsClients
from shared.bus import Publisher
from shared.db import OutboxRow
from shared.infra import provision
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from tests.factories import model_registered
from tests.helpers import eventually
from tests.integration.test_registrar_api import post_version, registrar_client
from tests.principals import AUDITOR, bearer
from tests.signed import owners


@pytest.fixture
def bus(localstack_endpoint, namespace):
    return provision(namespace, endpoint_url=localstack_endpoint)


@pytest.fixture
async def clients(localstack_endpoint, namespace):
    settings = ServiceSettings(service="approver", namespace=namespace, aws_endpoint_url=localstack_endpoint)
    async with AwsClients(settings, ("sqs", "sns")) as clients:
        yield clients


@pytest.fixture
async def publisher(clients, bus, localstack_endpoint, namespace) -> Publisher:
    return Publisher(clients["sns"], bus.topic_arn, await owners(localstack_endpoint, namespace))  # type: ignore[arg-type]


@pytest.fixture
async def api(tmp_path):
    async with registrar_client(f"sqlite+aiosqlite:///{tmp_path}/registrar.db") as client:
        yield client


def many_metrics(n: int = 12_000) -> dict[str, float]:
    return {f"metric_{i:05d}": 0.123456789 for i in range(n)}


async def test_a_registration_whose_event_is_too_large_for_the_bus_is_refused_with_422_and_writes_nothing(api):
    datasets = [{"name": f"d{i:03d}", "version": "1", "uri": "s3://b/" + "x" * 3000} for i in range(95)]
    response = await api.post("/v1/groups/fraud/versions", json={  # each part within the input limits, ~290 KB
        "artifact_uri": "s3://modelgate-artifacts/fraud/model.bin", "lineage": {"datasets": datasets}})
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    assert "too large for the bus" in detail and "lineage" in detail and "shrink" in detail
    async with api.runtime.sessionmaker() as session:
        assert (await session.scalars(select(OutboxRow))).all() == []
        assert (await session.scalars(select(ModelVersion))).all() == []


async def test_one_oversized_outbox_row_leaves_the_next_hundred_registrations_flowing(api, publisher, clients, bus):
    small = model_registered(group="fraud", version=999)
    huge = small.model_copy(update={"payload": small.payload.model_copy(update={"metrics": many_metrics()})})
    assert len(huge.model_dump_json()) > 256 * 1024  # SNS carries 256 KiB
    async with api.runtime.uow() as uow:  # written as older code (or a bug) would: straight into the table
        uow.session.add(OutboxRow(event_id=huge.event_id, event_type=huge.event_type, body=huge.model_dump_json()))
        await uow.commit()
    for _ in range(100):
        await post_version(api, "fraud", metrics={"auc": 0.9})

    relay = OutboxRelay(api.runtime.sessionmaker, publisher, asyncio.Event())
    while await relay.publish_pending():
        pass
    assert relay.healthy

    announced: set[str] = set()

    async def all_hundred_arrived() -> bool:
        response = await clients["sqs"].receive_message(
            QueueUrl=bus.queue_urls["approver"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            announced.add(json.loads(message["Body"])["correlation_id"])
        return len(announced) >= 100

    await eventually(all_hundred_arrived, timeout=60)
    assert announced == {f"fraud/{v}" for v in range(1, 101)}

    async with api.runtime.sessionmaker() as session:
        row = await session.scalar(select(OutboxRow).where(OutboxRow.event_id == huge.event_id))
        pending = (await session.scalars(select(OutboxRow).where(
            OutboxRow.published_at.is_(None), OutboxRow.set_aside_at.is_(None)))).all()
    assert row.published_at is None and row.set_aside_at is not None
    assert "too large for the bus" in row.set_aside_reason
    assert pending == []

    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["degraded"] is True and ready.json()["outbox_set_aside"] == 1
    assert "modelgate_outbox_set_aside 1.0" in (await api.get("/metrics")).text
    listed = await api.get("/v1/outbox/set-aside", headers=bearer(AUDITOR))
    assert listed.status_code == 200, listed.text
    assert [(r["event_id"], "too large" in r["reason"]) for r in listed.json()] == [(huge.event_id, True)]
    assert (await api.get("/v1/outbox/set-aside")).status_code == 403  # a registrant may not read it
