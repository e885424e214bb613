"""Retention on SQLite and PostgreSQL: the ledger and the published outbox are pruned past their windows;
pending outbox rows and the record are kept; the window cannot be shorter than a replay can arrive."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.settings import RegistrarSettings
from shared.db import OutboxRow, ProcessedEvent, create_tables, make_engine
from shared.events import new_id, utcnow
from shared.retention import Pruner


async def test_old_ledger_entries_and_published_outbox_rows_go_and_everything_else_stays(database_url):
    engine = make_engine(database_url)
    await create_tables(engine)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        for days in (30, 22, 1):
            session.add(ProcessedEvent(event_id=new_id(), event_type="Deployed", processed_at=now - timedelta(days=days)))
        for days, published in ((10, True), (8, True), (2, True), (30, False)):  # the last one never went out
            at = now - timedelta(days=days)
            session.add(OutboxRow(event_id=new_id(), event_type="Deployed", body="{}", created_at=at,
                                  published_at=at if published else None))
    pruner = Pruner(sessionmaker, batch=1)  # one row per transaction: the batching loop is exercised
    assert await pruner.prune_once() == {"processed_events": 2, "outbox": 2}
    assert await pruner.prune_once() == {"processed_events": 0, "outbox": 0}
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1
        kept = list(await session.scalars(select(OutboxRow).order_by(OutboxRow.created_at)))
        assert [(r.published_at is None) for r in kept] == [True, False]  # the pending one, the recent one
    await engine.dispose()


async def test_the_pruner_runs_until_stopped(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/p.db")
    await create_tables(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(async_sessionmaker(engine), interval=0.01).run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    await engine.dispose()


def test_a_ledger_window_shorter_than_a_replay_can_arrive_is_refused():
    with pytest.raises(ValidationError, match="ledger_retention_days"):
        RegistrarSettings(ledger_retention_days=14)


def test_a_benchmark_may_shorten_the_windows_to_minutes_only_when_it_says_so():
    minutes = {"ledger_retention_days": 120 / 86400, "outbox_retention_days": 60 / 86400}
    with pytest.raises(ValidationError, match="outbox_retention_days"):
        RegistrarSettings(outbox_retention_days=0.5)
    settings = RegistrarSettings(short_retention_for_benchmarks=True, **minutes)
    assert settings.ledger_retention_days * 86400 == pytest.approx(120)
