"""The outbox relay: publishes events committed to the outbox table, oldest first, at least once.

Nothing wedges it: a row the bus refuses for good (larger than SNS carries, or invalid: the Publisher's
`Accepted.refused`) is set aside with the reason (`set_aside_at`, `set_aside_reason`) and never tried again,
and the rows after it keep flowing. Set-aside rows are counted in `modelgate_outbox_set_aside` (/metrics),
make /readyz say `degraded` (still ready: everything else flows), and `modelgate dlq list` shows them.
A row that fails for any other reason (SNS unreachable, throttled) stays pending and is tried again.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
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
        try:
            await count_set_aside(self._sessionmaker)
        except SQLAlchemyError as exc:  # the database not there yet: counted after the next set-aside
            log.warning("outbox_count_failed", error=str(exc))
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
                await self._set_aside(session, refused := getattr(accepted, "refused", {}))
        else:  # SQLite: one process per file; publish outside any transaction, so writers never wait on SNS
            async with self._sessionmaker() as session:
                rows = await self._pending(session)
            accepted = await self._publish(rows)
            refused = getattr(accepted, "refused", {})
            if accepted or refused:
                async with UnitOfWork(self._sessionmaker) as uow:
                    await self._mark_published(uow.session, accepted)
                    await self._set_aside(uow.session, refused)
                    await uow.commit()
        if refused:
            await count_set_aside(self._sessionmaker)
        if len(rows) == self._batch:
            await self._count_pending()
        else:
            metrics.OUTBOX_PENDING.set(len(rows) - len(accepted) - len(refused))
        return len(accepted) + len(refused)

    @property
    def _claims_rows(self) -> bool:
        return self._sessionmaker.kw["bind"].dialect.name == "postgresql"

    async def _pending(self, session: AsyncSession) -> list[OutboxRow]:
        query = (select(OutboxRow).where(OutboxRow.published_at.is_(None), OutboxRow.set_aside_at.is_(None))
                 .order_by(OutboxRow.id).limit(self._batch))
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

    async def _set_aside(self, session: AsyncSession, refused: dict[str, str]) -> None:
        for event_id, reason in refused.items():
            log.error("outbox_row_set_aside", event_id=event_id, reason=reason)
            await session.execute(update(OutboxRow).where(OutboxRow.event_id == event_id)
                                  .values(set_aside_at=utcnow(), set_aside_reason=reason[:2000]))

    async def _count_pending(self) -> None:
        async with self._sessionmaker() as session:
            pending = await session.scalar(
                select(func.count()).where(OutboxRow.published_at.is_(None), OutboxRow.set_aside_at.is_(None)))
        metrics.OUTBOX_PENDING.set(pending or 0)


async def count_set_aside(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """How many outbox rows the bus refused for good (and sets `modelgate_outbox_set_aside` to it)."""
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).where(OutboxRow.set_aside_at.is_not(None))) or 0
    metrics.OUTBOX_SET_ASIDE.set(count)
    return count


async def set_aside_rows(sessionmaker: async_sessionmaker[AsyncSession], limit: int = 100) -> list[OutboxRow]:
    """The set-aside rows, oldest first (at most `limit`)."""
    async with sessionmaker() as session:
        query = select(OutboxRow).where(OutboxRow.set_aside_at.is_not(None)).order_by(OutboxRow.id).limit(limit)
        return list((await session.scalars(query)).all())
