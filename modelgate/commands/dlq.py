"""Dead-letter queues: `dlq list` shows what failed and why, `dlq redrive` puts it back on its queue.

A dead letter whose body was too large for the DLQ carries a claim check (shared.bus): both commands read the
body back from S3 (redrive sends the original body and then deletes the S3 copy). `dlq list` also shows each
service's outbox rows the bus refused for good (set aside, shared.outbox), asked of the running services.
With the SageMaker bridge on, `sagemaker` names its queue too (SageMaker events the registrar refused, with
the reason: docs/sagemaker.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.progress import Progress
from rich.table import Table

from modelgate.commands.common import (
    JsonOption,
    aws,
    clients,
    console,
    errors,
    explained,
    namespace,
    print_json,
    run,
)
from shared.bus import CLAIM_CHECK_SIZE, is_claim_check
from shared.client import ServiceError
from shared.topology import EMITS, SERVICES, dlq_name, queue_name, sagemaker_dlq_name, sagemaker_queue_name

app = typer.Typer(help="Look into and redrive the dead-letter queues.", no_args_is_help=True)

DLQ_ATTRIBUTES = ("dlq_reason", "dlq_source_queue", CLAIM_CHECK_SIZE)  # set by shared.bus when it dead-letters


def body_of(message: dict[str, Any], s3: Any = None) -> str:
    """The message's body, read back from S3 when the DLQ holds a claim check in its place."""
    where = is_claim_check(message["Body"])
    if where is None:
        return message["Body"]
    s3 = s3 or aws("s3")
    return s3.get_object(Bucket=where["bucket"], Key=where["key"])["Body"].read().decode()


BRIDGE = "sagemaker"  # the SageMaker bridge's queue (the registrar consumes it), when provisioned
QUEUES = (*SERVICES, BRIDGE)


def _check(service: str) -> str:
    if service not in QUEUES:
        raise typer.BadParameter(f"unknown service {service!r}; use one of {', '.join(QUEUES)}")
    return service


def _dlq(service: str) -> str:
    return sagemaker_dlq_name(namespace()) if service == BRIDGE else dlq_name(namespace(), service)


def _queue(service: str) -> str:
    return sagemaker_queue_name(namespace()) if service == BRIDGE else queue_name(namespace(), service)


def receive_all(sqs: Any, queue_url: str, limit: int, hide_for: int = 30) -> list[dict[str, Any]]:
    """Receives up to `limit` messages, hiding them for `hide_for` seconds so each is seen once."""
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, limit - len(seen)), WaitTimeSeconds=0,
            VisibilityTimeout=hide_for, MessageAttributeNames=["All"], AttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            seen.setdefault(message["MessageId"], message)
    return list(seen.values())


def release(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Makes received messages visible again at once."""
    for start in range(0, len(messages), 10):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                   for i, m in enumerate(messages[start:start + 10])]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def describe(service: str, message: dict[str, Any]) -> dict[str, Any]:
    attributes = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
    text = body_of(message)
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    sent = message.get("Attributes", {}).get("SentTimestamp")
    body = body if isinstance(body, dict) else {}
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else {}  # an EventBridge event (sagemaker)
    return {
        "service": service,
        "message_id": message["MessageId"],
        "event_type": attributes.get("event_type") or body.get("event_type") or body.get("detail-type"),
        "correlation_id": body.get("correlation_id") or detail.get("ModelPackageArn"),
        "event_id": body.get("event_id") if isinstance(body, dict) else None,
        "sent_at": datetime.fromtimestamp(int(sent) / 1000, UTC).isoformat() if sent else None,
        "reason": attributes.get("dlq_reason") or "moved by SQS after too many receives (no reason recorded)",
        "body": text,
        "claim_check": is_claim_check(message["Body"]),
    }


def set_aside(services: list[str]) -> list[dict[str, Any]]:
    """The outbox rows each running service set aside (the bus refused them for good); a service that does
    not answer is noted on stderr, not fatal (the queues are listed all the same)."""
    found: list[dict[str, Any]] = []

    async def ask() -> None:
        async with clients() as all_clients:
            for name in services:
                if not EMITS.get(name):
                    continue
                try:
                    rows = await getattr(all_clients, name).set_aside()
                except ServiceError as exc:
                    errors.print(f"[yellow]outbox of the {name} not read:[/] {exc}", highlight=False)
                    continue
                found.extend({"service": name, "message_id": f"outbox:{r['event_id']}", "event_type": r["event_type"],
                              "correlation_id": None, "event_id": r["event_id"], "sent_at": r["created_at"],
                              "reason": f"set aside in the outbox, never published: {r['reason']}", "body": None}
                             for r in rows)

    run(ask())
    return found


@app.command("list")
def list_(
    service: Annotated[list[str], typer.Option("--service", "-s", help=f"Only this service (repeatable): {', '.join(QUEUES)} (sagemaker: the SageMaker bridge's queue).")] = [],  # noqa: B006
    limit: Annotated[int, typer.Option(help="At most this many messages per queue.")] = 100,
    json_out: JsonOption = False,
) -> None:
    """List the messages in the services' dead-letter queues, with the reason each landed there.

    [bold]Examples[/]
      modelgate dlq list
      modelgate dlq list --service deployer --json | jq -r '.[].reason'
    """
    services = [_check(s) for s in service] or list(QUEUES)
    found: list[dict[str, Any]] = []
    sqs = aws("sqs")
    with explained():
        for name in services:
            if name == BRIDGE and not service and not _exists(sqs, _dlq(name)):
                continue  # the SageMaker bridge is off
            url = sqs.get_queue_url(QueueName=_dlq(name))["QueueUrl"]
            messages = receive_all(sqs, url, limit)
            release(sqs, url, messages)
            found.extend(describe(name, m) for m in messages)
    found.extend(set_aside([s for s in services if s in SERVICES]))
    if json_out:
        print_json(found)
        return
    if not found:
        console.print(f"no dead-lettered messages in {namespace()}")
        return
    table = Table(title=f"{len(found)} dead-lettered message(s) in {namespace()}")
    for column in ("service", "message id", "event", "version", "sent at"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for m in found:
        table.add_row(m["service"], m["message_id"], m["event_type"] or "?", m["correlation_id"] or "?",
                      (m["sent_at"] or "")[:19], m["reason"])
    console.print(table)
    console.print("put them back with: modelgate dlq redrive <service>")


def _exists(sqs: Any, name: str) -> bool:
    try:
        sqs.get_queue_url(QueueName=name)
    except ClientError:  # no such queue
        return False
    return True


@app.command()
def redrive(
    service: Annotated[str, typer.Argument(help=f"Whose DLQ: {', '.join(QUEUES)} (sagemaker: the SageMaker bridge's).")],
    message_id: Annotated[list[str], typer.Option("--id", help="Only these message ids (repeatable).")] = [],  # noqa: B006
    json_out: JsonOption = False,
) -> None:
    """Move messages from SERVICE's dead-letter queue back to its queue, to be handled again.

    The reason attributes added when they were dead-lettered are stripped. Fix the cause first (a newer
    service version, a missing version in the registrar, ...), or they come back.

    [bold]Examples[/]
      modelgate dlq redrive registrar
      modelgate dlq redrive deployer --id 5d0c2f0e-... --json
    """
    _check(service)
    sqs, s3 = aws("sqs"), aws("s3")
    moved: list[str] = []
    with explained():
        dlq_url = sqs.get_queue_url(QueueName=_dlq(service))["QueueUrl"]
        queue_url = sqs.get_queue_url(QueueName=_queue(service))["QueueUrl"]
        messages = receive_all(sqs, dlq_url, limit=10_000, hide_for=120)
        chosen = [m for m in messages if not message_id or m["MessageId"] in message_id]
        release(sqs, dlq_url, [m for m in messages if m not in chosen])
        with Progress(console=console, transient=True, disable=json_out or not console.is_terminal) as progress:
            task = progress.add_task(f"redriving {service}", total=len(chosen))
            for message in chosen:
                attributes = {
                    k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
                    for k, v in message.get("MessageAttributes", {}).items()
                    if k not in DLQ_ATTRIBUTES and "StringValue" in v
                }
                sqs.send_message(QueueUrl=queue_url, MessageBody=body_of(message, s3), MessageAttributes=attributes)
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                if (where := is_claim_check(message["Body"])) is not None:
                    s3.delete_object(Bucket=where["bucket"], Key=where["key"])
                moved.append(message["MessageId"])
                progress.advance(task)
    missing = sorted(set(message_id) - set(moved))
    if json_out:
        print_json({"service": service, "moved": moved, "not_found": missing})
        return
    console.print(f"moved {len(moved)} message(s) from {_dlq(service)} back to {_queue(service)}")
    if missing:
        console.print(f"[yellow]not in the DLQ:[/] {', '.join(missing)}")

