"""`events tail`: the live events on the bus, through a temporary queue of your own."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelgate.commands.catalog import event_detail
from modelgate.commands.common import aws, console, errors, explained, namespace
from shared.events import EVENT_CLASSES
from shared.topology import topic_name

app = typer.Typer(help="Watch the events on the bus.", no_args_is_help=True)


@contextmanager
def temporary_subscription(event_types: list[str]) -> Iterator[str]:
    """A fresh SQS queue subscribed to the topic (filtered on event_type), deleted with its subscription after."""
    sns, sqs = aws("sns"), aws("sqs")
    account = aws("sts").get_caller_identity()["Account"]
    topic_arn = f"arn:aws:sns:{sns.meta.region_name}:{account}:{topic_name(namespace())}"
    sns.get_topic_attributes(TopicArn=topic_arn)  # NotFound: the bus of this namespace is not provisioned
    queue_url = sqs.create_queue(QueueName=f"{namespace()}-tail-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    subscription_arn = None
    try:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
                "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }],
        })})
        attributes = {"RawMessageDelivery": "true"}
        if event_types:
            attributes["FilterPolicy"] = json.dumps({"event_type": event_types})
        subscription_arn = sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        yield queue_url
    finally:
        if subscription_arn:
            sns.unsubscribe(SubscriptionArn=subscription_arn)
        sqs.delete_queue(QueueUrl=queue_url)


def _wanted(event: dict[str, Any], group: str | None, version_id: str | None) -> bool:
    payload = event.get("payload") or {}
    if group is not None and payload.get("group") != group:
        return False
    return version_id is None or event.get("correlation_id") == version_id


@app.command()
def tail(
    event_type: Annotated[
        list[str], typer.Option("--type", help=f"Only these event types (repeatable): {', '.join(EVENT_CLASSES)}.")
    ] = [],  # noqa: B006
    group: Annotated[str | None, typer.Option(help="Only events about this model group.")] = None,
    version_id: Annotated[str | None, typer.Option("--version-id", help="Only this version, e.g. fraud/7.")] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    seconds: Annotated[float | None, typer.Option("--for", help="Stop after this many seconds.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON event per line (the envelope as sent).")] = False,
) -> None:
    """Print events as they are published, until Ctrl-C (or --count / --for).

    Creates a temporary SQS queue subscribed to the topic (with a filter policy for --type) and deletes
    it on exit; events published before it started are not shown.

    [bold]Examples[/]
      modelgate events tail
      modelgate events tail --type ApprovalRequested --type Deployed --group fraud-detector
      modelgate events tail --version-id fraud-detector/7 --count 4 --json | jq .event_type
    """
    unknown = sorted(set(event_type) - set(EVENT_CLASSES))
    if unknown:
        raise typer.BadParameter(f"unknown event type(s) {unknown}; use {', '.join(EVENT_CLASSES)}", param_hint="--type")
    deadline = time.monotonic() + seconds if seconds is not None else None
    shown = 0
    sqs = aws("sqs")
    with explained(), temporary_subscription(event_type) as queue_url:
        errors.print(f"listening to {topic_name(namespace())} (Ctrl-C to stop)", highlight=False)
        try:
            while (count is None or shown < count) and (deadline is None or time.monotonic() < deadline):
                wait = 20 if deadline is None else max(0, min(20, int(deadline - time.monotonic())))
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
                for message in messages.get("Messages", []):
                    event = json.loads(message["Body"])
                    if _wanted(event, group, version_id) and (count is None or shown < count):
                        shown += 1
                        _print_event(event, json_out)
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        except KeyboardInterrupt:
            pass


def _print_event(event: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print(json.dumps(event), flush=True)
        return
    payload = event.get("payload") or {}
    console.print(
        f"[dim]{event.get('occurred_at', '')[:23]}[/] [bold]{event.get('event_type')}[/] "
        f"{event.get('correlation_id')} {payload.get('stage', '')} [dim]{escape(event_detail(event))}[/]",
        highlight=False,
    )
