"""Poison messages against the four services running as real processes: each lands in its service's DLQ with
the reason, after the configured receives; the service keeps serving; once the cause is fixed,
`modelgate dlq redrive` puts it back and it completes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest

from bench.common import admin_headers, new_stack, running_system, upload_artifact
from shared.infra import boto_client
from shared.topology import dlq_name, queue_name
from tests.factories import approval_decided, model_registered
from tests.helpers import wait_until
from tests.signed import owners

MAX_RECEIVES = 3


@pytest.fixture(scope="module")
def system(localstack_endpoint):
    stack = new_stack(localstack_endpoint, "poison", {
        "MODELGATE_MAX_RECEIVE_COUNT": str(MAX_RECEIVES), "MODELGATE_POLL_WAIT_SECONDS": "2",
    })
    with running_system(stack):
        yield stack


def send_raw(stack, service: str, body: str, event_type: str | None = None) -> None:
    """What SNS would deliver (raw delivery), straight onto a service's queue."""
    sqs = boto_client("sqs", stack.endpoint)
    attributes = {"event_type": {"DataType": "String", "StringValue": event_type}} if event_type else {}
    url = sqs.get_queue_url(QueueName=queue_name(stack.namespace, service))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)


def signed_as_owner(stack, event) -> str:
    """The event (or its JSON as a dict) signed with its owner's key, as that producer would publish it."""
    producers = asyncio.run(owners(stack.endpoint, stack.namespace))
    return producers.sign(json.dumps(event)) if isinstance(event, dict) else producers.signed(event)


def dead_letters(stack, service: str) -> list[dict]:
    """Everything in a service's DLQ, left visible for the next reader."""
    sqs = boto_client("sqs", stack.endpoint)
    url = sqs.get_queue_url(QueueName=dlq_name(stack.namespace, service))["QueueUrl"]
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return [{"body": m["Body"], "id": m["MessageId"], **{k: v["StringValue"] for k, v in m["MessageAttributes"].items()}}
            for m in messages]


def register(stack, group: str) -> dict:
    artifact = upload_artifact(stack, f"{group}/model.bin")
    response = httpx.post(
        f"{stack.url('registrar')}/v1/groups/{group}/versions",
        json={"artifact_uri": artifact, "metrics": {"auc": 0.95}}, timeout=30, headers=admin_headers(stack),
    )
    assert response.status_code == 201, response.text
    return response.json()


def stage(stack, group: str, version: int, name: str) -> str | None:
    record = httpx.get(f"{stack.url('registrar')}/v1/groups/{group}/versions/{version}", timeout=10,
                       headers=admin_headers(stack)).json()
    return record["stages"].get(name)


def test_unparseable_messages_are_dead_lettered_with_the_reason_and_the_service_keeps_serving(system):
    malformed = "{not json"
    unknown_type = json.dumps({**json.loads(model_registered().model_dump_json()), "event_type": "ModelRetired"})
    violating = json.loads(model_registered(group="poison-schema").model_dump_json())
    violating["payload"]["metrics"] = {"auc": "very good"}
    del violating["payload"]["artifact_uri"]
    violating = signed_as_owner(system, violating)  # a real producer's bug, not a forgery: parsed, then refused
    for body, kind in ((malformed, None), (unknown_type, "ModelRetired"), (violating, "ModelRegistered")):
        send_raw(system, "approver", body, kind)

    def three_dead() -> list[dict]:
        dead = dead_letters(system, "approver")
        return dead if len(dead) >= 3 else []

    dead = {d["body"]: d for d in wait_until(three_dead, timeout=60)}
    assert set(dead) == {malformed, unknown_type, violating}
    assert dead[malformed]["dlq_reason"] == "refused: the message is not JSON"
    assert dead[unknown_type]["dlq_reason"] == "refused: unknown event type 'ModelRetired'"
    assert dead[violating]["dlq_reason"].startswith("unparseable event") and "artifact_uri" in dead[violating]["dlq_reason"]
    assert all(d["dlq_source_queue"].endswith(queue_name(system.namespace, "approver")) for d in dead.values())

    version = register(system, "poison-after")  # the approver kept going: a journey still completes
    wait_until(lambda: stage(system, "poison-after", version["version"], "dev") == "Deployed", timeout=60)
    assert httpx.get(f"{system.url('approver')}/readyz", timeout=5).status_code == 200


def test_an_event_that_always_fails_is_dead_lettered_after_the_receives_and_completes_once_redriven(system):
    ghost = approval_decided(group="poison-ghost", version=1, approval_id="ghost-approval")
    send_raw(system, "registrar", signed_as_owner(system, ghost), "ApprovalDecided")  # the registrar never heard of it

    def ghost_dead() -> list[dict]:
        return [d for d in dead_letters(system, "registrar") if ghost.event_id in d["body"]]

    dead = wait_until(ghost_dead, timeout=90)[0]
    assert f"handler failed {MAX_RECEIVES} times" in dead["dlq_reason"]
    assert "VersionNotFound" in dead["dlq_reason"] and "poison-ghost/1" in dead["dlq_reason"]
    assert httpx.get(f"{system.url('registrar')}/readyz", timeout=5).status_code == 200

    register(system, "poison-ghost")  # the cause, fixed: the registrar now knows poison-ghost/1
    env = {**os.environ, "MODELGATE_NAMESPACE": system.namespace, "AWS_ENDPOINT_URL": system.endpoint}
    done = subprocess.run(
        [sys.executable, "-m", "modelgate.cli", "dlq", "redrive", "registrar", "--id", dead["id"], "--json"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["moved"] == [dead["id"]]

    def ghost_decision_recorded() -> bool:
        url = f"{system.url('registrar')}/v1/groups/poison-ghost/versions/1/history"
        return any(e["event_id"] == ghost.event_id for e in httpx.get(url, timeout=10, headers=admin_headers(system)).json())

    wait_until(ghost_decision_recorded, timeout=60)
    assert not ghost_dead()
