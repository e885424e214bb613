"""Runs one service: HTTP API, consumer loop, outbox relay and the service's workers in one process.

`__main__` of every service is the same two lines: build the settings, `serve(settings, bootstrap)`. The
service's `bootstrap(runtime)` (services/<svc>/bootstrap.py) returns its Wiring; everything shared is here.
SIGTERM stops polling, lets in-flight messages finish (drain_seconds), then stops the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared import aws, topology
from shared.app import build_app
from shared.aws import AwsClients
from shared.bus import Consumer, Publisher
from shared.db import make_engine, reading
from shared.logging import configure_logging
from shared.migrations import prepare_service_database
from shared.outbox import OutboxRelay
from shared.retention import Pruner
from shared.runtime import Runtime, S, Wiring, Worker
from shared.signing import KeyRing, Signer, Verifier, producer_signer

log = structlog.get_logger()

Bootstrap = Callable[[Runtime[S]], Awaitable[Wiring]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals are ours: SIGTERM drains the consumer first
        yield


async def serve(settings: S, bootstrap: Bootstrap[S], aws_services: tuple[str, ...] = ()) -> None:
    configure_logging(settings.service, settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url)
    await prepare_service_database(engine, settings.service, settings.database_url)
    wanted = dict.fromkeys(("sqs", "sns", "secretsmanager", "ssm", "s3", *aws_services))
    async with AwsClients(settings, tuple(wanted)) as clients:
        topic_arn, queue_url, dlq_url = await _resolve_bus(clients, settings)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=async_sessionmaker(reading(engine), expire_on_commit=False),
            aws=clients,
            publisher=Publisher(clients["sns"], topic_arn, await _signer(clients, settings)),
        )
        wiring = await bootstrap(runtime)
        relay = OutboxRelay(runtime.sessionmaker, runtime.publisher, runtime.outbox_signal, settings.outbox_poll_seconds)
        consumer = Consumer(
            sqs=clients["sqs"],
            queue_url=queue_url,
            dlq_url=dlq_url,
            handlers=wiring.handlers,
            uow_factory=runtime.uow,
            sessionmaker=runtime.sessionmaker,
            verifier=Verifier(KeyRing(clients["ssm"], settings.namespace)),
            max_receive_count=settings.max_receive_count,
            wait_seconds=settings.poll_wait_seconds,
            batch_size=settings.batch_size,
            max_in_flight_batches=settings.max_in_flight_batches,
            s3=clients["s3"],
            claim_check_bucket=settings.claim_check_bucket,
            dlq_max_message_bytes=settings.dlq_max_message_bytes,
        )
        runtime.healthy.update(
            queue=lambda: consumer.last_poll_ok, outbox=lambda: relay.healthy, aws=lambda: not clients.overdue()
        )
        await _run_until_stopped(runtime, wiring, build_app(runtime, wiring), consumer, relay)
    await engine.dispose()


async def _signer(clients: AwsClients, settings: Any) -> Signer | None:
    """The service's event signer (None for a service that emits nothing), retried while AWS starts."""
    if not topology.EMITS[settings.service]:
        return None
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_exponential(max=5), retry=retry_if_exception_type(Exception), reraise=True
    ):
        with attempt:
            return await producer_signer(clients["secretsmanager"], clients["ssm"], settings.namespace, settings.service)
    raise AssertionError("unreachable")


async def _resolve_bus(clients: AwsClients, settings: Any) -> tuple[str, str, str]:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_exponential(max=5), retry=retry_if_exception_type(Exception), reraise=True
    ):
        with attempt:
            queue_url = await aws.queue_url(clients, settings.queue_name)
            return aws.topic_arn(queue_url, settings), queue_url, await aws.queue_url(clients, settings.dlq_name)
    raise AssertionError("unreachable")


async def _run_until_stopped(
    runtime: Runtime[Any], wiring: Wiring, app: FastAPI, consumer: Consumer, relay: OutboxRelay
) -> None:
    settings = runtime.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = _Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None, lifespan="off"))
    server_task = asyncio.create_task(server.serve())
    consumer_task = asyncio.create_task(consumer.run(stop, settings.drain_seconds))
    pruner = Pruner(runtime.sessionmaker, timedelta(days=settings.ledger_retention_days),
                    timedelta(days=settings.outbox_retention_days), settings.prune_interval_seconds)
    workers: list[Worker] = [relay, pruner, *wiring.workers]
    worker_tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    log.info("service_started", port=settings.http_port, queue=settings.queue_name, workers=len(workers))
    await asyncio.wait({asyncio.create_task(stop.wait()), server_task}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    log.info("service_stopping")
    await consumer_task
    await asyncio.wait(worker_tasks, timeout=settings.drain_seconds)  # workers drain what they claimed
    for task in worker_tasks:
        task.cancel()
    if wiring.on_stop is not None:
        await wiring.on_stop()
    server.should_exit = True
    await server_task
    log.info("service_stopped")
