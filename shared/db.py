"""Storage every service shares: the engine, the outbox, the processed-events ledger and the unit of work.

The outbox never takes an event the bus cannot carry: `UnitOfWork.publish` refuses (EventTooLarge, a 422
before anything commits) an event whose signed message and attributes would exceed MAX_MESSAGE_BYTES, SNS's
256 KiB. A row the bus refuses later anyway is set aside by the relay (`set_aside_at`, `set_aside_reason`;
shared.outbox) so the rows after it keep flowing.

Write through a UnitOfWork; a service's plain sessions (`runtime.sessionmaker()`) are for reading. On SQLite,
which has one writer at a time, a process's write transactions take turns on an asyncio lock (held from
BEGIN to COMMIT, not while a handler waits between transactions), and readers never wait (WAL).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, TypeDecorator, event, select
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.util import await_only

from shared import metrics, sqlite_inline
from shared.errors import Refused
from shared.events import Envelope, utcnow

#: What SNS carries in one message (the message and its attributes), and in one PublishBatch call in total.
MAX_MESSAGE_BYTES = 262_144
#: What signing adds to an event's JSON (shared.signing: `"signature":{"key_id":...,"value":...}`), rounded up.
SIGNATURE_ALLOWANCE = 256


def attribute_bytes(event_type: str) -> int:
    """What the `event_type` message attribute counts against the size limit (name, type and value)."""
    return len("event_type") + len("String") + len(event_type.encode())


def message_bytes(body: str, event_type: str, signed: bool = False) -> int:
    """The size SNS counts for an event: its (signed) JSON plus its attributes; unsigned bodies get the
    signature's allowance added."""
    return len(body.encode()) + (0 if signed else SIGNATURE_ALLOWANCE) + attribute_bytes(event_type)


class EventTooLarge(Refused):
    """The event a change would announce cannot fit on the bus: refused (422) before anything commits."""

    def __init__(self, event_type: str, size: int, largest: list[tuple[str, int]]):
        parts = ", ".join(f"{name} ({n:,} bytes)" for name, n in largest) or "its payload"
        super().__init__(
            422,
            f"the {event_type} event this would publish is too large for the bus: {size:,} bytes, more than "
            f"{MAX_MESSAGE_BYTES:,} (SNS's 256 KiB limit); its largest parts are {parts}: shrink them (fewer or "
            "shorter metrics, params, tags, lineage or model card text) and send it again",
        )
        self.event_type = event_type
        self.size = size


def _largest_parts(event: Envelope) -> list[tuple[str, int]]:
    payload = getattr(event, "payload", None)
    payload = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else {}
    sizes = [(name, len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()))
             for name, value in payload.items()]
    return sorted(sizes, key=lambda part: -part[1])[:3]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite would hand back naive datetimes).

    Every value is converted to UTC before it is stored or compared: SQLite keeps the wall-clock text and
    drops the offset, so `at >= 10:00-05:00` must be asked as `at >= 15:00` (UTC) to mean the same instant."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use shared.events.utcnow()")
        return value.astimezone(UTC)

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
    # Set by the relay when the bus refuses the row for good (too large, invalid): it is no longer tried,
    # the rows after it keep flowing; /metrics, /readyz and `modelgate dlq list` show it.
    set_aside_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    set_aside_reason: Mapped[str | None] = mapped_column(Text)


class ProcessedEvent(Base):
    """Events this service has handled, keyed on event_id: the idempotency ledger."""

    __tablename__ = "processed_events"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RequestAudit(Base):
    """Every change asked of a service's API and every refusal: who, what, from where, and how it ended
    (shared.audit writes it; every service's database holds it)."""

    __tablename__ = "request_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    principal: Mapped[str | None] = mapped_column(String(100), index=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # done | refused | failed
    reason: Mapped[str | None] = mapped_column(Text)


def make_engine(url: str) -> AsyncEngine:
    if not url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        event.listen(engine.sync_engine, "commit", _count_commit)
        return engine
    # SQLite runs on the event loop's thread (shared.sqlite_inline): no thread hop per statement. A statement
    # waits for a lock only when another process writes to the file, which no process should (one per file).
    # Connections are cheap and unlimited: writers waiting for their turn never leave a reader without one.
    engine = create_async_engine(
        url,
        connect_args={"timeout": 5},
        module=AsyncAdapt_aiosqlite_dbapi(sqlite_inline, sqlite3),
        pool_size=10,
        max_overflow=-1,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    turns = _Turns()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        # A reader needs no lock (WAL). A writer waits for its turn, then takes the write lock up front: a
        # deferred transaction that upgrades later can fail with "database is locked" without waiting.
        if conn.get_execution_options().get(READER):
            conn.exec_driver_sql("BEGIN")
            return
        turns.take(conn.connection.dbapi_connection)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.give_back(conn.connection.dbapi_connection)
            raise

    @event.listens_for(engine.sync_engine, "commit")
    @event.listens_for(engine.sync_engine, "rollback")
    def _end(conn):  # type: ignore[no-untyped-def]
        turns.give_back(conn.connection.dbapi_connection)

    event.listen(engine.sync_engine, "commit", _count_commit)

    @event.listens_for(engine.sync_engine.pool, "checkin")
    @event.listens_for(engine.sync_engine.pool, "invalidate")
    def _returned(dbapi_conn, *_args):  # type: ignore[no-untyped-def]
        turns.give_back(dbapi_conn)  # a transaction that ended without commit or rollback (cancelled, broken)

    return engine


READER = "modelgate_reader"


def _count_commit(_conn: object) -> None:
    metrics.DB_COMMITS.inc()


class _Turns:
    """SQLite has one writer at a time: a process's write transactions take turns here, in order, instead of
    busy-waiting in SQLite (which would block the event loop: see shared.sqlite_inline)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: object | None = None

    def take(self, holder: object) -> None:  # runs inside SQLAlchemy's greenlet, so it may await
        await_only(self._lock.acquire())
        self._holder = holder

    def give_back(self, holder: object) -> None:
        # The "commit" event comes just before the commit itself, which runs inline (no await in between):
        # the next writer starts after it.
        if holder is not None and self._holder is holder:
            self._holder = None
            self._lock.release()


def reading(engine: AsyncEngine) -> AsyncEngine:
    """The engine for sessions that only read: on SQLite they begin without the write lock."""
    return engine.execution_options(**{READER: True})


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


class UnitOfWork:
    """One transaction: state changes, the events announcing them, and the handled-event mark commit together."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], outbox_signal: asyncio.Event | None = None):
        self._sessionmaker = sessionmaker
        self._outbox_signal = outbox_signal
        self._published = False
        bind = sessionmaker.kw.get("bind")
        if bind is not None and bind.get_execution_options().get(READER):  # a service's sessionmaker reads
            self._writing = {"bind": bind.execution_options(**{READER: False})}
        else:
            self._writing = {}

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessionmaker(**self._writing)
        self._published = False
        self._after_commit: list[Callable[[], None]] = []
        return self

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this unit of work commits (e.g. wake a worker for the rows it just wrote)."""
        self._after_commit.append(callback)

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.rollback()
        await self.session.close()

    def publish(self, event: Envelope) -> None:
        """Queue an event to leave through the outbox when this unit of work commits; raises EventTooLarge
        (nothing is added) for an event the bus could not carry."""
        body = event.model_dump_json()
        if (size := message_bytes(body, event.event_type)) > MAX_MESSAGE_BYTES:
            raise EventTooLarge(event.event_type, size, _largest_parts(event))
        self.session.add(OutboxRow(event_id=event.event_id, event_type=event.event_type, body=body))
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
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


async def was_processed(sessionmaker: async_sessionmaker[AsyncSession], event_id: str) -> bool:
    async with sessionmaker() as session:
        return (await session.scalar(select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == event_id))) is not None
