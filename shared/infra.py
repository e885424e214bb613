"""Creates the bus, the notifications topic and the artifact bucket, idempotently (twice changes nothing).

The artifact bucket has versioning enabled: an overwritten artifact keeps the version a registration
pinned, so the deployer can still serve exactly the approved bytes (shared/pins.py).

    python -m shared.infra            # provision the namespace in $MODELGATE_NAMESPACE (default modelgate)

With MODELGATE_SAGEMAKER_BRIDGE=true it also provisions the SageMaker Model Registry bridge: an EventBridge
rule on the default bus matching "SageMaker Model Package State Change" events (of the groups in
MODELGATE_SAGEMAKER_GROUPS, when set) with the registrar's bridge queue (and its DLQ) as target; the queue's
policy lets only events.amazonaws.com send, and only for that rule (docs/sagemaker.md). Off by default:
nothing changes for existing set-ups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import localstack_client.config
import localstack_client.session
import structlog
from botocore.exceptions import ClientError

from shared import topology

log = structlog.get_logger()

VISIBILITY_TIMEOUT = 60
DLQ_RETENTION = 14 * 24 * 3600


@dataclass
class Provisioned:
    topic_arn: str
    queue_urls: dict[str, str] = field(default_factory=dict)
    dlq_urls: dict[str, str] = field(default_factory=dict)
    bucket: str = ""
    notifications_topic_arn: str = ""
    created: list[str] = field(default_factory=list)
    sagemaker_queue_url: str = ""  # the bridge's, when provisioned
    sagemaker_dlq_url: str = ""
    sagemaker_rule_arn: str = ""


def boto_client(service: str, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A sync client: LocalStack's through localstack-client when an endpoint is set, real AWS's otherwise.

    The endpoint is `endpoint_url` or $AWS_ENDPOINT_URL: http://127.0.0.1:4566 on the host,
    http://localstack:4566 in a container. Without either the client is plain boto3 with the default
    credential chain (real AWS). LocalStack takes any keys: $AWS_ACCESS_KEY_ID's if set, else "test".
    """
    endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "").rstrip("/")
    region = region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    if not endpoint_url:
        return boto3.client(service, region_name=region)
    keys = {
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID") or "test",
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
    }
    host = localstack_host(endpoint_url, service)
    if host is None:
        # An endpoint localstack-client would not send this service's requests to (it prefers
        # $AWS_ENDPOINT_URL over the host it is given, and builds only http://host:port): ours wins.
        return boto3.client(service, region_name=region, endpoint_url=endpoint_url, **keys)
    session = localstack_client.session.Session(localstack_host=host, region_name=region, **keys)
    return session.client(service)


def localstack_host(endpoint_url: str, service: str) -> str | None:
    """`host:port` for localstack-client when it resolves `service` to exactly `endpoint_url`, else None."""
    parts = urlsplit(endpoint_url)
    if not parts.hostname or parts.path or parts.query:
        return None
    host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    resolved = localstack_client.config.get_service_endpoint(service, host)
    return host if (resolved or "").rstrip("/") in (endpoint_url, f"{parts.scheme}://{host}") else None


def provision(
    namespace: str = "modelgate",
    endpoint_url: str | None = None,
    max_receive_count: int = 5,
    services: tuple[str, ...] = topology.SERVICES,
    sagemaker_bridge: bool = False,
    sagemaker_groups: tuple[str, ...] = (),
) -> Provisioned:
    sns, sqs, s3 = (boto_client(name, endpoint_url) for name in ("sns", "sqs", "s3"))
    topic_arn = sns.create_topic(Name=topology.topic_name(namespace))["TopicArn"]
    result = Provisioned(topic_arn=topic_arn)
    result.notifications_topic_arn = sns.create_topic(Name=topology.notifications_topic_name(namespace))["TopicArn"]
    for service in services:
        dlq_url, dlq_arn = _queue(
            sqs, topology.dlq_name(namespace, service), lambda arn: {"MessageRetentionPeriod": str(DLQ_RETENTION)}, result
        )
        queue_url, queue_arn = _queue(
            sqs,
            topology.queue_name(namespace, service),
            lambda arn: {
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
                "Policy": _allow_topic(arn, topic_arn),
            },
            result,
        )
        _subscribe(sns, topic_arn, queue_arn, topology.filter_policy(service), result)
        result.queue_urls[service] = queue_url
        result.dlq_urls[service] = dlq_url
    result.bucket = _bucket(s3, topology.bucket_name(namespace), result)
    if sagemaker_bridge:
        _sagemaker_bridge(sqs, boto_client("events", endpoint_url), namespace, max_receive_count, sagemaker_groups, result)
    return result


def _sagemaker_bridge(
    sqs: Any, events: Any, namespace: str, max_receive_count: int, groups: tuple[str, ...], result: Provisioned
) -> None:
    """The EventBridge rule sending SageMaker's model package events to the registrar's bridge queue."""
    rule_name = topology.sagemaker_rule_name(namespace)
    pattern = json.dumps(topology.sagemaker_event_pattern(groups))
    try:
        current = events.describe_rule(Name=rule_name)
    except ClientError as exc:
        if "ResourceNotFound" not in str(exc):
            raise
        current = None
    if current is None or not _same(current.get("EventPattern"), pattern) or current.get("State") != "ENABLED":
        rule_arn = events.put_rule(Name=rule_name, EventPattern=pattern, State="ENABLED",
                                   Description="SageMaker model package state changes, for modelgate's registrar")["RuleArn"]
        result.created.append(f"{'updated ' if current else ''}rule {rule_name}")
    else:
        rule_arn = current["Arn"]
    dlq_url, dlq_arn = _queue(
        sqs, topology.sagemaker_dlq_name(namespace), lambda arn: {"MessageRetentionPeriod": str(DLQ_RETENTION)}, result
    )
    queue_url, queue_arn = _queue(
        sqs,
        topology.sagemaker_queue_name(namespace),
        lambda arn: {
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
            "Policy": allow_rule(arn, rule_arn),
        },
        result,
    )
    targets = events.list_targets_by_rule(Rule=rule_name).get("Targets", [])
    if not any(t.get("Arn") == queue_arn for t in targets):
        events.put_targets(Rule=rule_name, Targets=[{"Id": "registrar-sagemaker", "Arn": queue_arn}])
        result.created.append(f"target {queue_arn} of rule {rule_name}")
    result.sagemaker_queue_url, result.sagemaker_dlq_url, result.sagemaker_rule_arn = queue_url, dlq_url, rule_arn


def allow_rule(queue_arn: str, rule_arn: str) -> str:
    """The bridge queue's policy: EventBridge may send to it, for this rule's events only."""
    return _allow_only("events.amazonaws.com", queue_arn, rule_arn)


def bridge_from_env(env: Any = None) -> tuple[bool, tuple[str, ...]]:
    """MODELGATE_SAGEMAKER_BRIDGE (true/false) and MODELGATE_SAGEMAKER_GROUPS (a,b or a JSON list) from `env`."""
    from shared.settings import name_list

    env = os.environ if env is None else env
    on = str(env.get("MODELGATE_SAGEMAKER_BRIDGE", "")).strip().lower() in {"1", "true", "yes", "on"}
    groups = name_list(env.get("MODELGATE_SAGEMAKER_GROUPS", "") or "")
    return on, tuple(groups if isinstance(groups, list) else [])


def _queue(
    sqs: Any, name: str, attributes_for: Callable[[str], dict[str, str]], result: Provisioned
) -> tuple[str, str]:
    """Creates the queue if missing, then brings its attributes to what `attributes_for(arn)` says."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        existed = True
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
            raise
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        existed = False
        result.created.append(f"queue {name}")
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    wanted = attributes_for(current["QueueArn"])
    changed = {k: v for k, v in wanted.items() if not _same(current.get(k), v)}
    if changed:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=changed)
        if existed:
            result.created.append(f"updated queue {name}: {sorted(changed)}")
    return url, current["QueueArn"]


def _same(current: str | None, wanted: str) -> bool:
    """Equal as JSON, where 5 and "5" count as the same (CloudFormation and the API disagree on such types)."""
    if current is None:
        return False
    try:
        return _as_strings(json.loads(current)) == _as_strings(json.loads(wanted))
    except ValueError:
        return current == wanted


def _as_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_strings(v) for v in value]
    return str(value)


def _allow_topic(queue_arn: str, topic_arn: str) -> str:
    return _allow_only("sns.amazonaws.com", queue_arn, topic_arn)


def _allow_only(service: str, queue_arn: str, source_arn: str) -> str:
    """A queue policy: `service` may send to the queue, for messages from `source_arn` only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
                }
            ],
        }
    )


def _subscribe(sns: Any, topic_arn: str, queue_arn: str, policy: dict[str, list[str]], result: Provisioned) -> None:
    existing = [
        s
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
        for s in page["Subscriptions"]
        if s["Endpoint"] == queue_arn
    ]
    if existing:
        arn = existing[0]["SubscriptionArn"]
        attributes = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
        if not _same(attributes.get("FilterPolicy"), json.dumps(policy)):
            sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue=json.dumps(policy))
            result.created.append(f"updated filter policy of {queue_arn}")
        return
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps(policy)},
    )
    result.created.append(f"subscription {queue_arn}")


def _bucket(s3: Any, name: str, result: Provisioned) -> str:
    try:
        s3.head_bucket(Bucket=name)
        existed = True
    except ClientError:
        s3.create_bucket(Bucket=name)
        result.created.append(f"bucket {name}")
        existed = False
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":  # keeps every pinned version
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if existed:
            result.created.append(f"updated bucket {name}: versioning enabled")
    return name


def main() -> None:
    namespace = os.environ.get("MODELGATE_NAMESPACE", "modelgate")
    bridge, groups = bridge_from_env()
    result = provision(namespace, max_receive_count=int(os.environ.get("MODELGATE_MAX_RECEIVE_COUNT", "5")),
                       sagemaker_bridge=bridge, sagemaker_groups=groups)
    print(json.dumps({"topic_arn": result.topic_arn, "queues": result.queue_urls, "created": result.created}, indent=2))


if __name__ == "__main__":
    main()
