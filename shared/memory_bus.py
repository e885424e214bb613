"""An in-memory bus for tests (in the manner of FastStream's TestBroker): services' handlers and workers run
together in one process, without LocalStack, with the same dispatch and outbox relay as production.

    bus = InMemoryBus()
    bus.attach("registrar", runtime, wiring)   # runtime.publisher is the bus; wiring from the bootstrap
    ...
    async with bus.running():                  # the attached services' workers run meanwhile
        await bus.settle(lambda: <what the test waits for>)

Events a service commits to its outbox are published by its real OutboxRelay into the bus, signed with a
key of that service's (shared.signing, keys in memory), verified as a consumer would, and each is delivered to the handlers of every attached service that consumes its type (shared.topology.CONSUMES),
through shared.bus.dispatch: idempotent on event_id, one transaction per event. A handler that raises is
retried on the next pump, as SQS would redeliver it. The real bus is tested against LocalStack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bus import Outgoing, dispatch
from shared.events import Envelope, parse_event
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, Wiring
from shared.signing import KeyRing, Signer, Verifier, private_key_from_secret
from shared.topology import CONSUMES, EMITS


@dataclass
class _Attached:
    runtime: Runtime[Any]
    wiring: Wiring
    relay: OutboxRelay
    inbox: list[Envelope] = field(default_factory=list)


@dataclass
class _SignedBy:
    """What a service's relay publishes through: its messages signed with its own key."""

    bus: InMemoryBus
    signer: Signer

    async def publish_messages(self, messages: Sequence[Outgoing]) -> set[str]:
        return await self.bus.publish_messages([Outgoing(m.event_id, m.event_type, self.signer.sign(m.body)) for m in messages])


class InMemoryBus:
    """Publisher and broker in one: `publish_messages` is what the services' relays call."""

    def __init__(self) -> None:
        self.services: dict[str, _Attached] = {}
        self.published: list[Envelope] = []
        self.outcomes: list[tuple[str, str, str]] = []  # (service, event_id, outcome or error)
        self._keys = KeyRing(ssm=None, namespace="memory")
        self._verifier = Verifier(self._keys)

    def attach(self, name: str, runtime: Runtime[Any], wiring: Wiring) -> None:
        publisher: Any = self
        if EMITS.get(name):
            signer = Signer(name, private_key_from_secret(f"in-memory {name}".encode()))
            self._keys.keys[name] = {signer.key_id: signer.private.public_key()}
            publisher = _SignedBy(self, signer)
        relay = OutboxRelay(runtime.sessionmaker, publisher, runtime.outbox_signal, poll_seconds=0.05)
        self.services[name] = _Attached(runtime, wiring, relay)

    async def publish_messages(self, messages: Sequence[Outgoing]) -> set[str]:
        """Delivers each message to its consumers once it verifies (a forged one raises shared.signing.Forged)."""
        for message in messages:
            await self._verifier.check(message.body)
            event = parse_event(message.body)
            self.published.append(event)
            for name, attached in self.services.items():
                if event.event_type in CONSUMES.get(name, ()):
                    attached.inbox.append(event)
        return {m.event_id for m in messages}

    async def pump(self) -> int:
        """Publishes every outbox and delivers every queued event once; returns how many moved."""
        moved = 0
        for attached in self.services.values():
            while sent := await attached.relay.publish_pending():
                moved += sent
        for name, attached in self.services.items():
            inbox, attached.inbox = attached.inbox, []
            for event in inbox:
                moved += 1
                await self._deliver(name, attached, event)
        return moved

    async def _deliver(self, name: str, attached: _Attached, event: Envelope) -> None:
        handler = attached.wiring.handlers.get(event.event_type)
        if handler is None:
            return
        try:
            outcome = await dispatch(event, handler, attached.runtime.uow)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # left for redelivery, as SQS would
            attached.inbox.append(event)
            outcome = f"error: {exc!r}"
        self.outcomes.append((name, event.event_id, outcome))

    async def settle(self, until: Callable[[], Any] | None = None, timeout: float = 10.0) -> None:
        """Pumps until nothing moves (or `until()` is true, awaited if it is a coroutine), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            moved = await self.pump()
            if until is not None:
                done = until()
                if asyncio.iscoroutine(done):
                    done = await done
                if done:
                    return
            quiet = 0 if moved else quiet + 1
            if until is None and quiet >= 5:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the in-memory bus did not settle in {timeout} s")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[InMemoryBus]:
        """Runs every attached service's workers until the block ends, then stops them as SIGTERM would."""
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for a in self.services.values() for w in a.wiring.workers]
        try:
            yield self
        finally:
            stop.set()
            _done, pending = await asyncio.wait(tasks, timeout=5) if tasks else (set(), set())
            for task in pending:
                task.cancel()
