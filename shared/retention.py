"""Retention: what a service's database may forget, so it does not grow for ever.

Promises:
- The idempotency ledger (processed_events) forgets an event `ledger_retention_days` after it was handled
  (default 21). That is safe because the window is longer than any copy of the event can still arrive: SQS
  keeps a message at most 14 days, and the consumer refuses any event older than the verifier's replay
  limit (15 days, shared/signing.py) before it looks at the ledger. The settings refuse a shorter window.
- Published outbox rows are forgotten `outbox_retention_days` after publishing (default 7); rows not
  published yet (pending, or set aside for a person) are never touched.
- Audit, history, approvals, deployments and deliveries are kept: they are the record.
- Deletes run in batches of `batch` rows, each its own short transaction, every `interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import OutboxRow, ProcessedEvent
from shared.events import utcnow

log = structlog.get_logger()


@dataclass
class Pruner:
    sessionmaker: async_sessionmaker[AsyncSession]
    ledger_retention: timedelta = timedelta(days=21)
    outbox_retention: timedelta = timedelta(days=7)
    interval: float = 3600.0
    batch: int = 1000

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.prune_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again at the next interval
                log.warning("prune_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def prune_once(self) -> dict[str, int]:
        """Deletes what is past its window; how many rows of each table went."""
        now = utcnow()
        ledger = await self._delete(ProcessedEvent, ProcessedEvent.event_id,
                                    ProcessedEvent.processed_at < now - self.ledger_retention)
        outbox = await self._delete(OutboxRow, OutboxRow.id, OutboxRow.published_at < now - self.outbox_retention)
        if ledger or outbox:
            log.info("pruned", processed_events=ledger, outbox=outbox)
        return {"processed_events": ledger, "outbox": outbox}

    async def _delete(self, table: type, key: object, old: object) -> int:
        total = 0
        while True:
            async with self.sessionmaker() as session, session.begin():
                keys = list(await session.scalars(select(key).where(old).limit(self.batch)))  # type: ignore[call-overload]
                if keys:
                    await session.execute(delete(table).where(key.in_(keys)))  # type: ignore[attr-defined]
            total += len(keys)
            if len(keys) < self.batch:
                return total
