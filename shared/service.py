"""Runs one service: HTTP API, consumer loop and outbox relay in one process, stopped gracefully by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared import aws
from shared.aws import AwsClients
from shared.bus import Consumer, Handler, Publisher
from shared.db import UnitOfWork, make_engine, reading
from shared.http import health_router
from shared.logging import configure_logging
from shared.migrations import prepare_service_database
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = structlog.get_logger()

BackgroundLoop = Callable[["Runtime", asyncio.Event], Awaitable[None]]


@dataclass
class Runtime:
    """What a running service has: its settings, database, AWS clients and the bus."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    aws: AwsClients
    publisher: Publisher
    outbox_signal: asyncio.Event = field(default_factory=asyncio.Event)
    consumer: Consumer | None = None
    relay: OutboxRelay | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker, self.outbox_signal)

    def consumer_ok(self) -> bool:
        return self.consumer is None or self.consumer.last_poll_ok

    def relay_ok(self) -> bool:
        return self.relay is None or self.relay.healthy

    def aws_ok(self) -> bool:
        """False while a call to AWS waits longer than it should: AWS accepts, but does not answer."""
        return not self.aws.overdue()


@dataclass
class ServiceSpec:
    """What makes one service different from another."""

    name: str
    build_handlers: Callable[[Runtime], Mapping[str, Handler]]
    build_api: Callable[[Runtime], FastAPI]
    aws_services: tuple[str, ...] = ()
    background: tuple[BackgroundLoop, ...] = ()
    on_start: Callable[[Runtime], Awaitable[None]] | None = None  # before the API and the consumer start
    on_stop: Callable[[Runtime], Awaitable[None]] | None = None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals are ours: SIGTERM drains the consumer first
        yield


async def serve(spec: ServiceSpec, settings: ServiceSettings) -> None:
    configure_logging(spec.name, settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url)
    await prepare_service_database(engine, spec.name, settings.database_url)
    async with AwsClients(settings, ("sqs", "sns", *spec.aws_services)) as clients:
        topic_arn, queue_url, dlq_url = await _resolve_bus(clients, settings)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=async_sessionmaker(reading(engine), expire_on_commit=False),
            aws=clients,
            publisher=Publisher(clients["sns"], topic_arn),
        )
        runtime.relay = OutboxRelay(
            runtime.sessionmaker, runtime.publisher, runtime.outbox_signal, settings.outbox_poll_seconds
        )
        runtime.consumer = Consumer(
            sqs=clients["sqs"],
            queue_url=queue_url,
            dlq_url=dlq_url,
            handlers=spec.build_handlers(runtime),
            uow_factory=runtime.uow,
            sessionmaker=runtime.sessionmaker,
            max_receive_count=settings.max_receive_count,
            wait_seconds=settings.poll_wait_seconds,
            batch_size=settings.batch_size,
            max_in_flight_batches=settings.max_in_flight_batches,
        )
        if spec.on_start is not None:
            await spec.on_start(runtime)
        app = spec.build_api(runtime)
        app.state.runtime = runtime
        app.include_router(health_router(runtime))
        await _run_until_stopped(spec, runtime, app)
    await engine.dispose()


async def _resolve_bus(clients: AwsClients, settings: ServiceSettings) -> tuple[str, str, str]:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_exponential(max=5), retry=retry_if_exception_type(Exception), reraise=True
    ):
        with attempt:
            queue_url = await aws.queue_url(clients, settings.queue_name)
            return aws.topic_arn(queue_url, settings), queue_url, await aws.queue_url(clients, settings.dlq_name)
    raise AssertionError("unreachable")


async def _run_until_stopped(spec: ServiceSpec, runtime: Runtime, app: FastAPI) -> None:
    settings = runtime.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = _Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None, lifespan="off"))
    server_task = asyncio.create_task(server.serve())
    assert runtime.consumer is not None and runtime.relay is not None
    consumer_task = asyncio.create_task(runtime.consumer.run(stop, settings.drain_seconds))
    relay_task = asyncio.create_task(runtime.relay.run(stop))
    extra = [asyncio.create_task(loop_fn(runtime, stop)) for loop_fn in spec.background]
    log.info("service_started", port=settings.http_port, queue=settings.queue_name)
    await asyncio.wait({asyncio.create_task(stop.wait()), server_task}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    log.info("service_stopping")
    await consumer_task
    await asyncio.wait([relay_task, *extra], timeout=5)
    for task in [relay_task, *extra]:
        task.cancel()
    if spec.on_stop is not None:
        await spec.on_stop(runtime)
    server.should_exit = True
    await server_task
    log.info("service_stopped")
