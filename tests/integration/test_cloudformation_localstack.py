"""The AWS template's bus, deployed by LocalStack's CloudFormation, is the bus the services expect.

infra/bus_template.py cuts the bus resources out of infra/cloudformation.yaml (LocalStack's free
edition has no ECS, RDS or load balancers); this deploys them as a stack with a fresh namespace, checks
what CloudFormation made against shared/topology.py and shared/infra.py, routes a real message of each
event type through the topic, and deletes the stack. The database init task's script from the same
template runs against the local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from shared import infra, topology
from shared.events import EVENT_CLASSES
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.localstack

STACK_TIMEOUT = 180


def load_bus_template_module() -> Any:
    spec = importlib.util.spec_from_file_location("bus_template", REPO_ROOT / "infra" / "bus_template.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client(name: str, endpoint: str) -> Any:
    """LocalStack's client (localstack-client, through shared.infra), in region us-east-1."""
    return infra.boto_client(name, endpoint, region="us-east-1")


def wait_for(cfn: Any, stack: str, *, deleted: bool = False) -> dict[str, Any] | None:
    deadline = time.monotonic() + STACK_TIMEOUT
    while time.monotonic() < deadline:
        try:
            (found,) = cfn.describe_stacks(StackName=stack)["Stacks"]
        except ClientError as exc:
            if deleted and "does not exist" in str(exc):
                return None
            raise
        if not found["StackStatus"].endswith("_IN_PROGRESS"):
            return found
        time.sleep(1)
    raise AssertionError(f"stack {stack} still in progress after {STACK_TIMEOUT} s")


def failures(cfn: Any, stack: str) -> list[str]:
    events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    return [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
        for e in events
        if "FAILED" in e["ResourceStatus"]
    ]


@pytest.fixture(scope="module")
def bus_stack(localstack_endpoint: str) -> Iterator[dict[str, Any]]:
    """The bus template deployed as a stack of its own, with a namespace nobody else uses."""
    module = load_bus_template_module()
    body = json.dumps(module.bus_template(module.load()))
    namespace = f"cfn{uuid.uuid4().hex[:10]}"
    stack = f"{namespace}-bus"
    cfn = client("cloudformation", localstack_endpoint)
    cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": "Namespace", "ParameterValue": namespace}],
    )
    try:
        created = wait_for(cfn, stack)
        assert created and created["StackStatus"] == "CREATE_COMPLETE", failures(cfn, stack)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in created.get("Outputs", [])}
        yield {"namespace": namespace, "stack": stack, "outputs": outputs, "endpoint": localstack_endpoint}
    finally:
        cfn.delete_stack(StackName=stack)
        gone = wait_for(cfn, stack, deleted=True)
        # The artifact bucket is retained by design (DeletionPolicy: Retain): remove it ourselves.
        s3 = client("s3", localstack_endpoint)
        bucket = topology.bucket_name(namespace)
        try:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
            s3.delete_bucket(Bucket=bucket)
        except ClientError:
            pass
        assert gone is None or gone["StackStatus"] == "DELETE_COMPLETE", gone


def test_stack_outputs_name_the_bus(bus_stack: dict[str, Any]) -> None:
    namespace, outputs = bus_stack["namespace"], bus_stack["outputs"]
    assert outputs["EventsTopicArn"].endswith(f":{topology.topic_name(namespace)}")
    assert outputs["ArtifactBucketName"] == topology.bucket_name(namespace)
    for service in topology.SERVICES:
        assert outputs[f"{service.capitalize()}QueueUrl"].endswith(
            f"/{topology.queue_name(namespace, service)}"
        )
        assert outputs[f"{service.capitalize()}DeadLetterQueueUrl"].endswith(
            f"/{topology.dlq_name(namespace, service)}"
        )


@pytest.mark.parametrize("service", topology.SERVICES)
def test_queue_has_its_dlq_redrive_and_topic_policy(bus_stack: dict[str, Any], service: str) -> None:
    namespace, sqs = bus_stack["namespace"], client("sqs", bus_stack["endpoint"])
    queue_url = sqs.get_queue_url(QueueName=topology.queue_name(namespace, service))["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=topology.dlq_name(namespace, service))["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    assert int(queue["VisibilityTimeout"]) == infra.VISIBILITY_TIMEOUT
    assert int(dlq["MessageRetentionPeriod"]) == infra.DLQ_RETENTION
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5
    allow, deny = json.loads(queue["Policy"])["Statement"]
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == bus_stack["outputs"]["EventsTopicArn"]
    assert deny["Effect"] == "Deny" and deny["Condition"]["ArnNotEquals"]["aws:SourceArn"] == allow["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"].endswith(f":role/{namespace}-operator*")


def test_the_producers_signing_keys_exist_and_are_what_the_services_read(bus_stack: dict[str, Any]) -> None:
    secrets = client("secretsmanager", bus_stack["endpoint"])
    for service, emitted in topology.EMITS.items():
        name = topology.signing_key_secret_name(bus_stack["namespace"], service)
        found = secrets.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]
        assert [s["Name"] for s in found] == ([name] if emitted else [])
        if emitted:
            assert len(secrets.get_secret_value(SecretId=name)["SecretString"]) == 64


def test_subscriptions_are_raw_and_filtered_as_topology_says(bus_stack: dict[str, Any]) -> None:
    namespace, sns = bus_stack["namespace"], client("sns", bus_stack["endpoint"])
    topic = bus_stack["outputs"]["EventsTopicArn"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    by_queue = {s["Endpoint"].rsplit(":", 1)[1]: s["SubscriptionArn"] for s in subscriptions}
    assert set(by_queue) == {topology.queue_name(namespace, s) for s in topology.SERVICES}
    for service in topology.SERVICES:
        attributes = sns.get_subscription_attributes(
            SubscriptionArn=by_queue[topology.queue_name(namespace, service)]
        )["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        assert json.loads(attributes["FilterPolicy"]) == topology.filter_policy(service)


def test_each_event_type_reaches_exactly_its_consumers(bus_stack: dict[str, Any]) -> None:
    namespace, sns, sqs = (
        bus_stack["namespace"],
        client("sns", bus_stack["endpoint"]),
        client("sqs", bus_stack["endpoint"]),
    )
    topic = bus_stack["outputs"]["EventsTopicArn"]
    for event_type in EVENT_CLASSES:
        sns.publish(
            TopicArn=topic,
            Message=json.dumps({"event_type": event_type}),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": event_type}},
        )
    for service in topology.SERVICES:
        url = sqs.get_queue_url(QueueName=topology.queue_name(namespace, service))["QueueUrl"]
        received: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(received) < len(topology.CONSUMES[service]):
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            ):
                received.append(json.loads(message["Body"])["event_type"])  # raw delivery: the body is ours
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        time.sleep(1)  # anything not meant for this queue would have arrived by now
        received += [
            json.loads(m["Body"])["event_type"]
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        ]
        assert sorted(received) == sorted(topology.CONSUMES[service]), service


def test_bus_parameter_and_approver_secret_exist(bus_stack: dict[str, Any]) -> None:
    namespace, endpoint = bus_stack["namespace"], bus_stack["endpoint"]
    value = json.loads(
        client("ssm", endpoint).get_parameter(Name=f"/modelgate-stacks/{namespace}/bus")["Parameter"]["Value"]
    )
    assert value["topic_arn"] == bus_stack["outputs"]["EventsTopicArn"]
    assert value["bucket"] == topology.bucket_name(namespace)
    assert set(value["queues"]) == set(topology.SERVICES)
    for name in ("hmac-key", "token-pepper"):
        secret = client("secretsmanager", endpoint).get_secret_value(SecretId=f"{namespace}/approver/{name}")
        assert len(secret["SecretString"]) == 64, name


def test_shared_infra_finds_nothing_missing(
    bus_stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m shared.infra` (make up, compose) and the template build the same bus: it creates nothing."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    result = infra.provision(bus_stack["namespace"], endpoint_url=bus_stack["endpoint"])
    assert result.topic_arn == bus_stack["outputs"]["EventsTopicArn"]
    # shared.infra may rewrite an attribute CloudFormation stored in another spelling (maxReceiveCount
    # 5 vs "5"); it must never need to create a queue, subscription or bucket the template did not.
    assert [c for c in result.created if not c.startswith("updated ")] == []


# ---- the database init task of the same template, against the local PostgreSQL ----------------------


def init_script() -> str:
    module = load_bus_template_module()
    (init,) = module.load()["Resources"]["DatabaseInitTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert init["Command"][:2] == ["python", "-c"]
    return init["Command"][2]


@pytest.mark.postgres
def test_database_init_script_creates_isolated_databases_idempotently() -> None:
    import asyncpg

    admin_url = urlsplit(
        os.environ.get("MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    prefix = f"mginit{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{s}" for s in topology.SERVICES]
    passwords = {name: f"pw-{uuid.uuid4().hex}'q" for name in names}  # a quote, to prove the escaping
    master = {
        "host": admin_url.hostname,
        "port": admin_url.port or 5432,
        "username": admin_url.username,
        "password": admin_url.password or "",
    }
    env = {
        **os.environ,
        "MASTER_SECRET": json.dumps(master),
        "SERVICES": ",".join(names),
        **{f"{name.upper()}_PASSWORD": password for name, password in passwords.items()},
    }

    async def admin() -> Any:
        return await asyncpg.connect(
            host=master["host"],
            port=master["port"],
            user=master["username"],
            password=master["password"] or None,
            database="postgres",
        )

    async def check() -> None:
        for name in names:
            own = await asyncpg.connect(
                host=master["host"], port=master["port"], user=name, password=passwords[name], database=name
            )
            await own.execute("CREATE TABLE IF NOT EXISTS probe (x int)")  # it owns its database
            await own.close()
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # and cannot open another's
            await asyncpg.connect(
                host=master["host"],
                port=master["port"],
                user=names[0],
                password=passwords[names[0]],
                database=names[1],
            )

    async def cleanup() -> None:
        connection = await admin()
        try:
            for name in names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await connection.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await connection.close()

    try:
        for _ in range(2):  # idempotent: a second run changes nothing and does not fail
            done = subprocess.run(
                [sys.executable, "-c", init_script()],
                check=False,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if "Connect call failed" in done.stderr or "ConnectionRefusedError" in done.stderr:
                pytest.fail(f"PostgreSQL is not reachable at {admin_url.geturl()}: {done.stderr[-300:]}")
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [f"database {name}: ready" for name in names]
        asyncio.run(check())
    finally:
        asyncio.run(cleanup())
