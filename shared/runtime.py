"""What every running service has, and the shape of what a service's composition root builds.

`Runtime` holds the parts every service shares (settings, database, AWS clients, publisher); a service's
`services/<svc>/bootstrap.py` adds its own parts in a typed object of its own and returns a `Wiring`:
its handlers (event type -> plain async function), its HTTP routers and its workers. Nothing is looked up by
string key at run time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus import Handler
from shared.db import UnitOfWork
from shared.identity import Authenticator
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)
__all__ = ["Handler", "PublishesMessages", "Runtime", "Wiring", "Worker"]


class Worker(Protocol):
    """Slow side effects run here, not in handlers: a loop that claims rows until `stop` is set."""

    async def run(self, stop: asyncio.Event) -> None: ...


class PublishesMessages(Protocol):
    """The SNS publisher (shared.bus.Publisher) or the in-memory bus of tests (shared.memory_bus)."""

    async def publish_messages(self, messages: Sequence[Any]) -> set[str]: ...


@dataclass
class Runtime(Generic[S]):
    """A running service's shared parts: settings, database, AWS clients (name -> client) and publisher."""

    settings: S
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    aws: Mapping[str, Any]
    publisher: PublishesMessages | None = None
    outbox_signal: asyncio.Event = field(default_factory=asyncio.Event)
    healthy: dict[str, Callable[[], bool]] = field(default_factory=dict)  # readiness checks beyond the database

    def uow(self) -> UnitOfWork:
        """A write transaction: state changes, outbox rows and the handled-event mark commit together."""
        return UnitOfWork(self.sessionmaker, self.outbox_signal)


@dataclass
class Wiring:
    """What a service's bootstrap returns: how each event is handled, what it serves, what runs beside."""

    handlers: Mapping[str, Handler]
    routers: Sequence[APIRouter] = ()
    workers: Sequence[Worker] = ()
    context: Any = None  # the service's own typed object, reachable from routes (see shared.http.context_of)
    authenticator: Authenticator | None = None  # verifies credentials (shared.identity); None refuses all (503)
    service_key: str | None = None  # what siblings present when they ask on a caller's behalf (shared.secrets)
    title: str = ""
    description: str = ""
    on_stop: Callable[[], Awaitable[None]] | None = None


def stop_all(*stops: Callable[[], Awaitable[None]] | None) -> Callable[[], Awaitable[None]]:
    """One `on_stop` that runs each of `stops` (None skipped), in order."""

    async def stop() -> None:
        for each in stops:
            if each is not None:
                await each()

    return stop
