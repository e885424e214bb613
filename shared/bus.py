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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.db import UnitOfWork, was_processed
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


class Publisher:
    """Publishes events to the SNS topic, each signed by `signer`, up to ten per PublishBatch call.
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

    async def publish_messages(self, messages: Sequence[Outgoing]) -> set[str]:
        """Returns the event_ids SNS accepted; the rest should be tried again."""
        accepted: set[str] = set()
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {
                    "Id": str(index),
                    "Message": self._signed(m.body),
                    "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": m.event_type}},
                }
                for index, m in enumerate(chunk)
            ]
            response = await self._sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)
            for ok in response.get("Successful", []):
                accepted.add(chunk[int(ok["Id"])].event_id)
            for failed in response.get("Failed", []):
                log.warning("publish_failed", event_id=chunk[int(failed["Id"])].event_id, reason=failed.get("Message"))
        metrics.EVENTS_PUBLISHED.inc(len(accepted))
        return accepted


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
        attributes = {
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
            for name, value in message.get("MessageAttributes", {}).items()
            if "StringValue" in value
        }
        attributes["dlq_reason"] = {"DataType": "String", "StringValue": reason[:1000]}
        attributes["dlq_source_queue"] = {"DataType": "String", "StringValue": self.queue_url}
        await self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"], MessageAttributes=attributes)
        log.error("dead_lettered", reason=reason)


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

