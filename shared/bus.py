"""The message bus: one publisher (SNS) and one consumer loop (SQS) that turns messages into typed events.

Handlers never see SQS: they are plain `async def handler(event, uow)` functions, looked up by event type,
and run through `dispatch` in one transaction the consumer owns. Outcomes of a message:
- handled, a known duplicate, or `Skip` (stale/irrelevant)  -> deleted
- unparseable, or failing on its last allowed receive         -> sent to the DLQ with the reason, deleted
- any other failure                                           -> left for redelivery (SQS owns retries)

Signed events, checked first (shared.signing): the publisher signs every message with the producer's key;
the consumer verifies the signature and the producer's ownership of the event type before it parses or
dispatches, and dead-letters a forged, tampered, unsigned or wrongly produced event at once, with the reason
(counted in modelgate_events_refused_total); it changes nothing.

Dead letters, one story: the consumer is what dead-letters, because only it can say why (the `dlq_reason`
and `dlq_source_queue` attributes `modelgate dlq list` shows). It does so on the receive whose
ApproximateReceiveCount reaches MODELGATE_MAX_RECEIVE_COUNT. Each queue's RedrivePolicy uses the same count
and acts one receive later, so it only moves what no consumer could answer for (a message whose handling
killed the process each time): such a message carries no reason, and `dlq list` says so.

Dead-lettering always succeeds (the claim-check pattern of the SQS extended client): a message whose body
and attributes would not fit the DLQ (`dlq_max_message_bytes`, SQS's 256 KiB) has its body stored in S3
(`claim_check_bucket`, key `dead-letters/<queue>/<event_id>`) and the DLQ message carries the extended
client's pointer instead (`["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": ...,
"s3Key": ...}]`, attribute `ExtendedPayloadSize`); `modelgate dlq list/redrive` read it back. Attributes stay
within SQS's limits: at most ten (the reason, the source queue, the claim-check size and the first of the
message's own), each value cut to fit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import ClientError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.db import MAX_MESSAGE_BYTES, UnitOfWork, message_bytes, was_processed
from shared.events import Envelope, parse_event
from shared.signing import Forged, Signer, Unverifiable, Verifier

log = structlog.get_logger()

Handler = Callable[[Any, UnitOfWork], Awaitable[None]]
UowFactory = Callable[[], UnitOfWork]


class Skip(Exception):
    """Raised by a handler for a stale or irrelevant event: acknowledge it and do nothing."""


@dataclass(frozen=True)
class Outgoing:
    event_id: str
    event_type: str
    body: str


class Accepted(set[str]):
    """What a publish returns: the event_ids the bus took (a set); `refused` holds those it refused for good
    (event_id -> why: too large, invalid), which trying again would not change."""

    def __init__(self, ids: Iterable[str] = (), refused: Mapping[str, str] | None = None):
        super().__init__(ids)
        self.refused: dict[str, str] = dict(refused or {})


#: PublishBatch per-entry failure codes that trying again would not change (the sender's fault for good).
PERMANENT_FAILURES = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError", "BatchRequestTooLong",
                                "InvalidBatchEntryId", "BatchEntryIdsNotDistinct", "InvalidMessage", "ParameterValueInvalid"})


def is_permanent(code: str, message: str = "") -> bool:
    return code in PERMANENT_FAILURES or "too long" in message.lower() or "too large" in message.lower()


class Publisher:
    """Publishes events to the SNS topic, each signed by `signer`, in PublishBatch calls of up to ten messages
    and MAX_MESSAGE_BYTES in total. A message larger than the bus carries, or one SNS refuses for good, is
    returned in `Accepted.refused` (the relay sets it aside); anything else that fails is left to try again.
    `signer` None: this service emits no events (publishing raises)."""

    def __init__(self, sns: Any, topic_arn: str, signer: Signer | None):
        self._sns = sns
        self.topic_arn = topic_arn
        self._signer = signer

    def _signed(self, body: str) -> str:
        if self._signer is None:
            raise RuntimeError("this service has no signing key: it emits no events")
        return self._signer.sign(body)

    async def publish(self, events: Sequence[Envelope]) -> set[str]:
        return await self.publish_messages([Outgoing(e.event_id, e.event_type, e.model_dump_json()) for e in events])

    async def publish_messages(self, messages: Sequence[Outgoing]) -> Accepted:
        """Returns the event_ids SNS accepted, and in `.refused` those it never will; the rest should be tried again."""
        result = Accepted()
        batch: list[tuple[Outgoing, dict[str, Any]]] = []
        batch_bytes = 0
        for m in messages:
            entry = {"Message": self._signed(m.body),
                     "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": m.event_type}}}
            size = message_bytes(entry["Message"], m.event_type, signed=True)
            if size > MAX_MESSAGE_BYTES:
                result.refused[m.event_id] = (f"too large for the bus: {size:,} bytes signed, more than "
                                              f"{MAX_MESSAGE_BYTES:,} (SNS's 256 KiB limit)")
                continue
            if len(batch) == 10 or batch_bytes + size > MAX_MESSAGE_BYTES:
                await self._send(batch, result)
                batch, batch_bytes = [], 0
            batch.append((m, entry))
            batch_bytes += size
        if batch:
            await self._send(batch, result)
        metrics.EVENTS_PUBLISHED.inc(len(result))
        return result

    async def _send(self, batch: list[tuple[Outgoing, dict[str, Any]]], result: Accepted) -> None:
        entries = [{"Id": str(index), **entry} for index, (_m, entry) in enumerate(batch)]
        try:
            response = await self._sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if not is_permanent(str(error.get("Code", "")), str(error.get("Message", ""))):
                raise
            if len(batch) > 1:  # one of them spoils the call: each on its own, so only that one is refused
                for one in batch:
                    await self._send([one], result)
                return
            result.refused[batch[0][0].event_id] = f"refused by SNS: {error.get('Code')}: {error.get('Message')}"
            log.error("publish_refused", event_id=batch[0][0].event_id, reason=error.get("Message"))
            return
        for ok in response.get("Successful", []):
            result.add(batch[int(ok["Id"])][0].event_id)
        for failed in response.get("Failed", []):
            event_id = batch[int(failed["Id"])][0].event_id
            if failed.get("SenderFault") and is_permanent(str(failed.get("Code", "")), str(failed.get("Message", ""))):
                result.refused[event_id] = f"refused by SNS: {failed.get('Code')}: {failed.get('Message')}"
                log.error("publish_refused", event_id=event_id, reason=failed.get("Message"))
            else:
                log.warning("publish_failed", event_id=event_id, reason=failed.get("Message"))


@dataclass
class _Outcome:
    delete: bool
    receipt_handle: str


@dataclass
class Consumer:
    """Long-polls one SQS queue and dispatches each message to the handler for its event type."""

    sqs: Any
    queue_url: str
    dlq_url: str
    handlers: Mapping[str, Handler]
    uow_factory: UowFactory
    sessionmaker: async_sessionmaker[AsyncSession]
    verifier: Verifier
    max_receive_count: int = 5
    wait_seconds: int = 20
    batch_size: int = 10
    max_in_flight_batches: int = 4
    s3: Any = None  # where bodies too large for the DLQ go (claim check)
    claim_check_bucket: str = ""
    dlq_max_message_bytes: int = 262_144  # the DLQ's MaximumMessageSize
    last_poll_ok: bool = field(default=True, init=False)  # the queue URL resolved at start-up

    async def run(self, stop: asyncio.Event, drain_seconds: float = 25.0) -> None:
        """Poll until `stop` is set, then let in-flight batches finish (up to `drain_seconds`)."""
        slots = asyncio.Semaphore(self.max_in_flight_batches)
        in_flight: set[asyncio.Task[None]] = set()
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await slots.acquire()
                receive = asyncio.create_task(self._receive())
                await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():  # stopping: unreceived messages simply stay in the queue
                    receive.cancel()
                    slots.release()
                    break
                messages = receive.result()
                if not messages:
                    slots.release()
                    continue
                task = asyncio.create_task(self._process_batch(messages))
                in_flight.add(task)

                def finished(done: asyncio.Task[None]) -> None:
                    in_flight.discard(done)
                    slots.release()

                task.add_done_callback(finished)
        finally:
            stop_wait.cancel()
            if in_flight:
                log.info("draining", batches=len(in_flight))
                _done, pending = await asyncio.wait(in_flight, timeout=drain_seconds)
                for task in pending:  # their messages become visible again and are redelivered
                    task.cancel()

    async def _receive(self) -> list[dict[str, Any]]:
        try:
            response = await self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.batch_size,
                WaitTimeSeconds=self.wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AWS unreachable: back off, stay alive, report not-ready
            self.last_poll_ok = False
            log.warning("receive_failed", error=str(exc))
            await asyncio.sleep(2)
            return []
        self.last_poll_ok = True
        return response.get("Messages", [])

    async def _process_batch(self, messages: list[dict[str, Any]]) -> None:
        outcomes = await asyncio.gather(*(self._process_safely(m) for m in messages))
        entries = [{"Id": str(i), "ReceiptHandle": o.receipt_handle} for i, o in enumerate(outcomes) if o.delete]
        if not entries:
            return
        try:
            await self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:  # redelivered later and recognised as duplicates
            log.warning("delete_failed", error=str(exc), count=len(entries))

    async def _process_safely(self, message: dict[str, Any]) -> _Outcome:
        try:
            return await self._process(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the DLQ unreachable: leave the message for redelivery
            log.error("message_processing_failed", error=repr(exc))
            return _Outcome(False, message["ReceiptHandle"])

    async def _process(self, message: dict[str, Any]) -> _Outcome:
        receipt = message["ReceiptHandle"]
        try:
            await self.verifier.check(message["Body"])
        except Forged as exc:
            await self._dead_letter(message, f"refused: {exc}")
            metrics.EVENTS_REFUSED.labels(exc.kind).inc()
            return _Outcome(True, receipt)
        except Unverifiable as exc:
            return _Outcome(await self._retry_or_dead_letter(message, "verification failed", str(exc)) == "dead_lettered", receipt)
        try:
            event = parse_event(message["Body"])
        except ValidationError as exc:
            await self._dead_letter(message, f"unparseable event: {_short(exc)}")
            metrics.EVENTS_HANDLED.labels("unknown", "unparseable").inc()
            return _Outcome(True, receipt)
        handler = self.handlers.get(event.event_type)
        with structlog.contextvars.bound_contextvars(
            correlation_id=event.correlation_id, event_id=event.event_id, event_type=event.event_type
        ):
            if handler is None:
                log.warning("no_handler_for_event")
                metrics.EVENTS_HANDLED.labels(event.event_type, "ignored").inc()
                return _Outcome(True, receipt)
            outcome = await self._handle(event, handler, message)
            metrics.EVENTS_HANDLED.labels(event.event_type, outcome).inc()
            return _Outcome(outcome != "retry", receipt)

    async def _handle(self, event: Envelope, handler: Handler, message: dict[str, Any]) -> str:
        try:
            return await dispatch(event, handler, self.uow_factory)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if await was_processed(self.sessionmaker, event.event_id):  # a concurrent twin won the race
                log.info("duplicate_skipped")
                return "duplicate"
            return await self._retry_or_dead_letter(message, "handler failed", repr(exc))

    async def _retry_or_dead_letter(self, message: dict[str, Any], what: str, error: str) -> str:
        """Left for redelivery (with backoff) until its last allowed receive, then dead-lettered with the reason."""
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if receives >= self.max_receive_count:
            log.error(f"{what.replace(' ', '_')}_dead_lettered", receives=receives, error=error)
            await self._dead_letter(message, f"{what} {receives} times: {error}")
            return "dead_lettered"
        log.warning(f"{what.replace(' ', '_')}_will_retry", receives=receives, error=error)
        await self._retry_later(message, receives)
        return "retry"

    async def _retry_later(self, message: dict[str, Any], receives: int) -> None:
        delay = min(2 ** (receives - 1), 60)
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=delay
            )
        except Exception as exc:  # not fatal: the message reappears after the queue's own timeout
            log.warning("change_visibility_failed", error=str(exc))

    async def _dead_letter(self, message: dict[str, Any], reason: str) -> None:
        body = message["Body"]
        attributes = dead_letter_attributes(message, reason, self.queue_url)
        if len(body.encode()) + _attributes_bytes(attributes) + CLAIM_CHECK_ALLOWANCE > self.dlq_max_message_bytes:
            body, attributes = await self._claim_check(message, attributes)
        await self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=body, MessageAttributes=attributes)
        log.error("dead_lettered", reason=reason)

    async def _claim_check(self, message: dict[str, Any], attributes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Stores the body in S3 and returns the pointer that takes its place (and its attributes)."""
        if self.s3 is None or not self.claim_check_bucket:
            raise RuntimeError("a message too large for the DLQ and no claim-check bucket to put its body in")
        body = message["Body"].encode()
        key = f"{CLAIM_CHECK_PREFIX}{self.queue_url.rsplit('/', 1)[-1]}/{_event_id(message)}"
        await self.s3.put_object(Bucket=self.claim_check_bucket, Key=key, Body=body, ContentType="application/json")
        pointer = json.dumps([CLAIM_CHECK_POINTER, {"s3BucketName": self.claim_check_bucket, "s3Key": key}])
        attributes = dict(list(attributes.items())[: MAX_ATTRIBUTES - 1])
        attributes[CLAIM_CHECK_SIZE] = {"DataType": "Number", "StringValue": str(len(body))}
        log.info("dead_letter_claim_checked", bucket=self.claim_check_bucket, key=key, bytes=len(body))
        return pointer, attributes


#: SQS allows ten message attributes; the DLQ keeps these three of its own and the first of the message's.
MAX_ATTRIBUTES = 10
DLQ_OWN_ATTRIBUTES = ("dlq_reason", "dlq_source_queue")
MAX_REASON_CHARS = 1000
MAX_ATTRIBUTE_CHARS = 1024  # a message's own attribute values, cut to this in the DLQ
#: The SQS extended client's pointer format and size attribute, so its tools can read our claim checks.
CLAIM_CHECK_POINTER = "software.amazon.payloadoffloading.PayloadS3Pointer"
CLAIM_CHECK_SIZE = "ExtendedPayloadSize"
CLAIM_CHECK_PREFIX = "dead-letters/"
CLAIM_CHECK_ALLOWANCE = 64  # the size attribute a claim check adds, so the decision never lands just over


def dead_letter_attributes(message: dict[str, Any], reason: str, source_queue: str) -> dict[str, Any]:
    """The DLQ message's attributes: the reason and source queue, then the message's own string attributes
    (at most ten in all, SQS's limit)."""
    own = [(name, {"DataType": value["DataType"], "StringValue": value["StringValue"][:MAX_ATTRIBUTE_CHARS]})
           for name, value in message.get("MessageAttributes", {}).items()
           if "StringValue" in value and name not in DLQ_OWN_ATTRIBUTES and name != CLAIM_CHECK_SIZE]
    attributes = {
        "dlq_reason": {"DataType": "String", "StringValue": reason[:MAX_REASON_CHARS]},
        "dlq_source_queue": {"DataType": "String", "StringValue": source_queue},
    }
    attributes.update(own[: MAX_ATTRIBUTES - len(attributes) - 1])  # one left for a claim check's size
    return attributes


def _attributes_bytes(attributes: Mapping[str, Any]) -> int:
    """What SQS counts of attributes against the message size: each name, data type and value."""
    return sum(len(name.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
               for name, v in attributes.items())


def _event_id(message: dict[str, Any]) -> str:
    try:
        event_id = json.loads(message["Body"]).get("event_id")
    except (ValueError, AttributeError):
        event_id = None
    safe = str(event_id) if isinstance(event_id, str) and event_id.replace("-", "").isalnum() else ""
    return safe[:64] or str(message.get("MessageId", "unknown"))


def is_claim_check(body: str) -> dict[str, str] | None:
    """The S3 location a dead-lettered message's body was moved to, or None for an ordinary body."""
    if not body.startswith(f'["{CLAIM_CHECK_POINTER}"'):
        return None
    try:
        _kind, where = json.loads(body)
        return {"bucket": str(where["s3BucketName"]), "key": str(where["s3Key"])}
    except (ValueError, KeyError, TypeError):
        return None


async def dispatch(event: Envelope, handler: Handler, uow_factory: UowFactory) -> str:
    """Handles one event in one transaction that the caller's unit of work owns: the handler records, the
    handled-event mark is added, and both commit together. Returns "handled", "duplicate" or "skipped";
    anything else the handler raises propagates (left for redelivery by the consumer loop)."""
    try:
        async with uow_factory() as uow:
            if await uow.already_processed(event):
                log.info("duplicate_skipped")
                return "duplicate"
            await handler(event, uow)
            uow.mark_processed(event)
            await uow.commit()
    except Skip as exc:
        log.info("event_skipped", reason=str(exc))
        return "skipped"
    log.info("event_handled")
    return "handled"


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]) or str(exc)

