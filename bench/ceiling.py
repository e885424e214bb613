"""The emulator ceiling: bare journeys with the AWS calls of a real one, and no database, no logic.

The same topic, queues and filter policies as the system; the same calls, batched the same way:
HeadObject and a PublishBatch of ModelRegistered (registrar), ReceiveMessage + DeleteMessageBatch on every
queue, a PublishBatch of what each received batch causes (ApprovalDecided; Deployed after a PutParameter
per version; ApprovalRequested after Deployed), and, as the notifier's default routing does, one Publish
per notified event to the notifications topic. The journey ends when the notifier's queue yields Deployed.
Whatever rate these reach is what LocalStack allows; the system is measured against it.

    python -m bench.ceiling --journeys 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Self

from aiobotocore.session import get_session

from bench.common import console, deprovision, percentile, private_localstack, summary_ms, table
from shared.infra import provision
from shared.topology import bucket_name, notifications_topic_name
from tests.factories import sample_events

BODIES = {event.event_type: event.model_dump_json() for event in sample_events()}  # real bodies, real sizes


@dataclass
class BareResult:
    journeys: int
    seconds: float
    per_second: float
    latencies: list[float]
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def calls_per_journey(self) -> float:
        return sum(self.calls.values()) / self.journeys


class BareSystem:
    """Four bare consumers and a bare registrar on one namespace; `journey_ids` arrive at the notifier."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.namespace = f"bare{uuid.uuid4().hex[:8]}"
        self.calls: Counter[str] = Counter()
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Self:
        self.bus = await asyncio.to_thread(provision, self.namespace, self.endpoint)
        self.notifications_arn = self.bus.topic_arn.rsplit(":", 1)[0] + ":" + notifications_topic_name(self.namespace)
        session = get_session()
        kwargs = {"region_name": "us-east-1", "endpoint_url": self.endpoint,
                  "aws_access_key_id": "test", "aws_secret_access_key": "test"}
        clients = {}
        for name in ("sns", "sqs", "s3", "ssm"):
            clients[name] = await self._stack.enter_async_context(session.create_client(name, **kwargs))
            clients[name].meta.events.register("before-call", self._count)
        self.sns, self.sqs, self.s3, self.ssm = clients["sns"], clients["sqs"], clients["s3"], clients["ssm"]
        await self.s3.put_object(Bucket=bucket_name(self.namespace), Key="model.bin", Body=b"model bytes")
        self.calls.clear()
        self._outboxes = {service: asyncio.Queue() for service in ("registrar", "approver", "deployer")}
        for service, react in (("approver", self._approve), ("deployer", self._deploy),
                               ("notifier", self._notify), ("registrar", self._ignore)):
            self._tasks.append(asyncio.create_task(self._consume(service, react)))
        for outbox in self._outboxes.values():
            self._tasks.append(asyncio.create_task(self._relay(outbox)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.wait(self._tasks, timeout=25)
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        await asyncio.to_thread(deprovision, self.namespace, self.endpoint)

    def _count(self, model: Any, **_kwargs: Any) -> None:
        self.calls[f"{model.service_model.service_name}.{model.name}"] += 1

    async def register(self, journey_id: str) -> None:
        """What the registrar does for a journey: one HeadObject; its ModelRegistered goes to the outbox."""
        self.started[journey_id] = time.time()
        await self.s3.head_object(Bucket=bucket_name(self.namespace), Key="model.bin")
        self._outboxes["registrar"].put_nowait(("ModelRegistered", journey_id))

    async def _relay(self, outbox: asyncio.Queue[tuple[str, str]]) -> None:
        """Like the outbox relay: one PublishBatch at a time, of up to ten events waiting."""
        while True:
            events = [await outbox.get()]
            while len(events) < 10 and not outbox.empty():
                events.append(outbox.get_nowait())
            await self._publish(events)

    async def _publish(self, events: list[tuple[str, str]]) -> None:
        for start in range(0, len(events), 10):
            chunk = events[start : start + 10]
            await self.sns.publish_batch(
                TopicArn=self.bus.topic_arn,
                PublishBatchRequestEntries=[
                    {"Id": str(i), "Message": json.dumps({"journey": journey, "event": BODIES[kind]}),
                     "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": kind}}}
                    for i, (kind, journey) in enumerate(chunk)
                ],
            )

    async def _consume(self, service: str, react: Callable[[list[tuple[str, str]]], Any]) -> None:
        queue_url = self.bus.queue_urls[service]
        while not self._stop.is_set():
            response = await self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages = response.get("Messages", [])
            if not messages:
                continue
            events = [(m["MessageAttributes"]["event_type"]["StringValue"], json.loads(m["Body"])["journey"]) for m in messages]
            asyncio.create_task(self._handle(queue_url, messages, events, react))

    async def _handle(self, queue_url: str, messages: list[dict], events: list[tuple[str, str]], react: Callable) -> None:
        await react(events)
        await self.sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )

    async def _approve(self, events: list[tuple[str, str]]) -> None:
        caused = {"ModelRegistered": "ApprovalDecided", "Deployed": "ApprovalRequested"}
        for kind, journey in events:
            if kind in caused:
                self._outboxes["approver"].put_nowait((caused[kind], journey))

    async def _deploy(self, events: list[tuple[str, str]]) -> None:
        async def one(journey: str) -> None:
            await self.ssm.put_parameter(Name=f"/{self.namespace}/dev/current", Value=journey, Type="String", Overwrite=True)
            self._outboxes["deployer"].put_nowait(("Deployed", journey))

        await asyncio.gather(*(one(journey) for _kind, journey in events))

    async def _notify(self, events: list[tuple[str, str]]) -> None:
        async def one(kind: str, journey: str) -> None:
            await self.sns.publish(TopicArn=self.notifications_arn, Message=BODIES[kind],
                                   MessageAttributes={"event_type": {"DataType": "String", "StringValue": kind}})
            if kind == "Deployed":
                self.finished[journey] = time.time()

        await asyncio.gather(*(one(kind, journey) for kind, journey in events))

    async def _ignore(self, events: list[tuple[str, str]]) -> None:
        pass

    async def wait_finished(self, journey_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(j not in self.finished for j in journey_ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


async def bare_throughput(endpoint: str, journeys: int, concurrency: int = 32) -> BareResult:
    """Journeys registered as fast as `concurrency` allows; the rate of completions in their middle 80%."""
    async with BareSystem(endpoint) as bare:
        ids = [f"j{i}" for i in range(journeys)]
        slots = asyncio.Semaphore(concurrency)

        async def one(journey_id: str) -> None:
            async with slots:
                await bare.register(journey_id)

        await asyncio.gather(*(one(j) for j in ids))
        await bare.wait_finished(ids, timeout=max(60.0, journeys / 2))
        done = sorted(bare.finished[j] for j in ids if j in bare.finished)
        rate = middle_rate(done)
        latencies = [bare.finished[j] - bare.started[j] for j in ids if j in bare.finished]
        return BareResult(len(done), done[-1] - min(bare.started.values()), rate, latencies, Counter(bare.calls))


async def bare_latency(endpoint: str, journeys: int, rate: float) -> BareResult:
    """One bare journey every 1/rate seconds; each one's registration-to-notification time."""
    async with BareSystem(endpoint) as bare:
        ids = [f"j{i}" for i in range(journeys)]
        started = time.monotonic()
        tasks = []
        for i, journey_id in enumerate(ids):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(bare.register(journey_id)))
        await asyncio.gather(*tasks)
        await bare.wait_finished(ids, timeout=60)
        latencies = [bare.finished[j] - bare.started[j] for j in ids if j in bare.finished]
        return BareResult(len(latencies), time.monotonic() - started, rate, latencies, Counter(bare.calls))


def middle_rate(finish_times: list[float]) -> float:
    """Completions per second between the 10th and the 90th percentile of finish times (no ramp-up/down)."""
    if len(finish_times) < 10:
        return float("nan")
    low, high = len(finish_times) // 10, len(finish_times) * 9 // 10
    return (high - low) / max(finish_times[high] - finish_times[low], 1e-9)


async def _main(args: argparse.Namespace, endpoint: str) -> None:
    latency = await bare_latency(endpoint, args.latency_journeys, args.rate)
    throughput = await bare_throughput(endpoint, args.journeys)
    s = summary_ms(latency.latencies)
    console.print(table("bare journeys (no database, no logic)", ["measure", "value"], [
        (f"latency p50 / p90 / p99 ms at {args.rate:g}/s", f"{s['p50']:.0f} / {s['p90']:.0f} / {s['p99']:.0f}"),
        ("ceiling journeys/s", f"{throughput.per_second:.1f}"),
        ("AWS calls per journey at the ceiling", f"{throughput.calls_per_journey:.1f}"),
        ("p99 latency at the ceiling ms", f"{percentile(throughput.latencies, 99) * 1000:.0f}"),
    ]))
    console.print(dict(throughput.calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=600)
    parser.add_argument("--latency-journeys", type=int, default=200)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--endpoint", help="an existing LocalStack; default: start a private one")
    args = parser.parse_args()
    if args.endpoint:
        asyncio.run(_main(args, args.endpoint))
    else:
        with private_localstack() as localstack:
            asyncio.run(_main(args, localstack.endpoint))


if __name__ == "__main__":
    main()
