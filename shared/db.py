"""Storage every service shares: the engine, the outbox, the processed-events ledger and the unit of work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, TypeDecorator, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.events import Envelope, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite would hand back naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use shared.events.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class OutboxRow(Base):
    """An event written in the same transaction as the state change it announces; the relay publishes it."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class ProcessedEvent(Base):
    """Events this service has handled, keyed on event_id: the idempotency ledger."""

    __tablename__ = "processed_events"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def make_engine(url: str) -> AsyncEngine:
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(conn):  # type: ignore[no-untyped-def]
        # Take the write lock up front: a deferred transaction that upgrades later can fail with
        # "database is locked" without waiting for busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


class UnitOfWork:
    """One transaction: state changes, the events announcing them, and the handled-event mark commit together."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], outbox_signal: asyncio.Event | None = None):
        self._sessionmaker = sessionmaker
        self._outbox_signal = outbox_signal
        self._published = False

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessionmaker()
        self._published = False
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.rollback()
        await self.session.close()

    def publish(self, event: Envelope) -> None:
        """Queue an event to leave through the outbox when this unit of work commits."""
        self.session.add(OutboxRow(event_id=event.event_id, event_type=event.event_type, body=event.model_dump_json()))
        self._published = True

    async def already_processed(self, event: Envelope) -> bool:
        return await self.session.get(ProcessedEvent, event.event_id) is not None

    def mark_processed(self, event: Envelope) -> None:
        self.session.add(ProcessedEvent(event_id=event.event_id, event_type=event.event_type))

    async def commit(self) -> None:
        await self.session.commit()
        if self._published and self._outbox_signal is not None:
            self._outbox_signal.set()
        self._published = False


async def was_processed(sessionmaker: async_sessionmaker[AsyncSession], event_id: str) -> bool:
    async with sessionmaker() as session:
        return (await session.scalar(select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == event_id))) is not None
