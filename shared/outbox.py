"""The outbox relay: publishes events committed to the outbox table, oldest first, at least once."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.bus import Outgoing, Publisher
from shared.db import OutboxRow, UnitOfWork
from shared.events import utcnow

log = structlog.get_logger()


class OutboxRelay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        signal: asyncio.Event,
        poll_seconds: float = 1.0,
        batch: int = 10,
    ):
        self._sessionmaker = sessionmaker
        self._publisher = publisher
        self._signal = signal
        self._poll_seconds = poll_seconds
        self._batch = batch
        self.healthy = True

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self._poll_seconds
        while True:
            try:
                sent = await self.publish_pending()
                self.healthy, backoff = True, self._poll_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # AWS or the database unreachable: keep the rows, try again later
                self.healthy, sent = False, 0
                backoff = min(backoff * 2, 30.0)
                log.warning("outbox_publish_failed", error=str(exc), retry_in=backoff)
            if stop.is_set() and sent == 0:
                return
            if sent < self._batch:
                await self._wait(backoff)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._signal.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._signal.clear()

    async def publish_pending(self) -> int:
        """Publishes one batch; returns how many events were published."""
        if self._claims_rows:  # PostgreSQL: replicas share the table; each holds the rows it publishes
            async with self._sessionmaker() as session, session.begin():
                rows = await self._pending(session)
                accepted = await self._publish(rows)
                await self._mark_published(session, accepted)
        else:  # SQLite: one process per file; publish outside any transaction, so writers never wait on SNS
            async with self._sessionmaker() as session:
                rows = await self._pending(session)
            accepted = await self._publish(rows)
            if accepted:
                async with UnitOfWork(self._sessionmaker) as uow:
                    await self._mark_published(uow.session, accepted)
                    await uow.commit()
        if len(rows) == self._batch:
            await self._count_pending()
        else:
            metrics.OUTBOX_PENDING.set(len(rows) - len(accepted))
        return len(accepted)

    @property
    def _claims_rows(self) -> bool:
        return self._sessionmaker.kw["bind"].dialect.name == "postgresql"

    async def _pending(self, session: AsyncSession) -> list[OutboxRow]:
        query = select(OutboxRow).where(OutboxRow.published_at.is_(None)).order_by(OutboxRow.id).limit(self._batch)
        if self._claims_rows:
            query = query.with_for_update(skip_locked=True)
        return list((await session.scalars(query)).all())

    async def _publish(self, rows: list[OutboxRow]) -> set[str]:
        if not rows:
            return set()
        return await self._publisher.publish_messages([Outgoing(r.event_id, r.event_type, r.body) for r in rows])

    async def _mark_published(self, session: AsyncSession, event_ids: set[str]) -> None:
        if event_ids:
            await session.execute(update(OutboxRow).where(OutboxRow.event_id.in_(event_ids)).values(published_at=utcnow()))

    async def _count_pending(self) -> None:
        async with self._sessionmaker() as session:
            pending = await session.scalar(select(func.count()).where(OutboxRow.published_at.is_(None)))
        metrics.OUTBOX_PENDING.set(pending or 0)
