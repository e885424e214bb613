"""AWS clients: one aiobotocore session per process, one long-lived client per AWS service."""

from __future__ import annotations

import os
import time
import weakref
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared import metrics
from shared.settings import ServiceSettings


def client_kwargs(settings: ServiceSettings, service: str | None = None) -> dict[str, Any]:
    """Region, endpoint and (for an emulator) credentials of a client.

    `AWS_ENDPOINT_URL_<SERVICE>` (the AWS SDKs' own convention, e.g. AWS_ENDPOINT_URL_SAGEMAKER) points one
    service elsewhere than AWS_ENDPOINT_URL: used to reach moto for what LocalStack's free edition lacks.
    """
    kwargs: dict[str, Any] = {"region_name": settings.aws_region}
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") if service else None
    endpoint = endpoint or settings.aws_endpoint_url
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if not os.environ.get("AWS_ACCESS_KEY_ID"):  # LocalStack accepts any credentials
            kwargs.update(aws_access_key_id="test", aws_secret_access_key="test")
    return kwargs


class _Call:
    """An AWS call on its way; gone when its request context is (a call cancelled midway included)."""

    __slots__ = ("__weakref__", "limit", "operation", "started")

    def __init__(self, operation: str, limit: float):
        self.operation, self.limit, self.started = operation, limit, time.monotonic()


class AwsClients:
    """Opens each requested client once and keeps it for the life of the process."""

    def __init__(self, settings: ServiceSettings, services: tuple[str, ...]):
        self._settings = settings
        self._services = services
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._in_flight: weakref.WeakSet[_Call] = weakref.WeakSet()

    async def __aenter__(self) -> AwsClients:
        session = get_session()
        config = AioConfig(
            connect_timeout=5,
            read_timeout=self._settings.poll_wait_seconds + 10,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=50,
        )
        for name in self._services:
            self._clients[name] = await self._stack.enter_async_context(
                session.create_client(name, config=config, **client_kwargs(self._settings, name))
            )
            events = self._clients[name].meta.events
            events.register("before-call", self._call_started)
            events.register("after-call", self._call_ended)
            events.register("after-call-error", self._call_ended)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def __getitem__(self, name: str) -> Any:
        return self._clients[name]

    def __contains__(self, name: object) -> bool:
        return name in self._clients

    def overdue(self) -> list[str]:
        """The calls AWS has not answered in time (a long poll may take its wait, plus 5 s; others 10 s)."""
        now = time.monotonic()
        return [call.operation for call in list(self._in_flight) if now - call.started > call.limit]

    def _call_started(self, model: Any, context: dict[str, Any], **_kwargs: Any) -> None:
        metrics.AWS_CALLS.labels(model.service_model.service_name, model.name).inc()
        limit = self._settings.poll_wait_seconds + 5 if model.name == "ReceiveMessage" else 10
        context["modelgate_call"] = call = _Call(model.name, limit)
        self._in_flight.add(call)

    def _call_ended(self, context: dict[str, Any], **_kwargs: Any) -> None:
        self._in_flight.discard(context.get("modelgate_call"))  # type: ignore[arg-type]


def topic_arn(queue_url: str, settings: ServiceSettings) -> str:
    """The events topic's ARN, in the account of the service's own queue (its URL ends /<account>/<name>):
    no STS call, and no STS client held for it."""
    account = queue_url.rstrip("/").split("/")[-2]
    return f"arn:aws:sns:{settings.aws_region}:{account}:{settings.topic_name}"


async def queue_url(clients: AwsClients, name: str) -> str:
    return (await clients["sqs"].get_queue_url(QueueName=name))["QueueUrl"]
