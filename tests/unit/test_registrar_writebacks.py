"""The registrar's Comet write-backs: recorded by the handlers, carried out by the worker after commit,
retried with backoff and given up after max_attempts. On SQLite and PostgreSQL (SKIP LOCKED)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import bootstrap
from services.registrar.catalog import Registration, register
from services.registrar.comet_writeback import CometWriteback, CometWritebackError
from services.registrar.models import CometWritebackRow, WritebackStatus
from services.registrar.settings import RegistrarSettings
from services.registrar.writebacks import CometWritebackWorker
from shared.db import make_engine
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.factories import approval_decided

FROM_REGISTRY = {"comet": {"registry_model": "fraud-xgb", "registry_version": "1.0.0"}}


class FakeComet(CometWriteback):
    def __init__(self, failures: int = 0):
        super().__init__("key", "acme")
        self.failures, self.calls = failures, []

    async def on_approval_decided(self, model_name, version, stage, decision):
        self.calls.append((model_name, version, stage, decision))
        if self.failures:
            self.failures -= 1
            raise CometWritebackError("Comet is down")
        return [f"tag:{stage}-approved"]


async def _registrar(url: str, comet: CometWriteback):
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    runtime = Runtime(settings=RegistrarSettings(database_url=url), engine=engine, sessionmaker=sessionmaker, aws={})
    async with runtime.uow() as uow:
        await register(uow, "fraud", Registration(artifact_uri="s3://b/m", registered_by="ana", lineage=FROM_REGISTRY))
        await uow.commit()
    return runtime, await bootstrap(runtime, comet=comet)


async def _deliver(runtime, wiring, event) -> None:
    async with runtime.uow() as uow:
        await wiring.handlers[event.event_type](event, uow)
        await uow.commit()


async def _rows(runtime) -> list[CometWritebackRow]:
    async with runtime.sessionmaker() as session:
        return list(await session.scalars(select(CometWritebackRow)))


async def test_the_handler_records_the_writeback_and_the_worker_does_it_after_commit(database_url) -> None:
    comet = FakeComet()
    runtime, wiring = await _registrar(database_url, comet)
    [worker] = wiring.workers
    await _deliver(runtime, wiring, approval_decided())
    assert comet.calls == [] and worker.wake.is_set()  # nothing called while the event's transaction was open
    assert await worker.run_once() and not await worker.run_once()
    assert comet.calls == [("fraud-xgb", "1.0.0", "dev", "Approved")]
    [row] = await _rows(runtime)
    assert (row.status, row.attempts) == (WritebackStatus.DONE, 1)
    await runtime.engine.dispose()


async def test_a_failed_writeback_is_retried_then_given_up(database_url) -> None:
    comet = FakeComet(failures=5)
    runtime, wiring = await _registrar(database_url, comet)
    worker = CometWritebackWorker(runtime.uow, comet, wiring.context.writeback_wake, max_attempts=2, backoff_seconds=0)
    await _deliver(runtime, wiring, approval_decided())
    assert await worker.run_once()  # attempt 1 fails: pending again, after the (zero) backoff
    [row] = await _rows(runtime)
    assert (row.status, row.attempts, row.last_error) == (WritebackStatus.PENDING, 1, "Comet is down")
    assert await worker.run_once()  # attempt 2 fails: given up
    [row] = await _rows(runtime)
    assert (row.status, row.attempts) == (WritebackStatus.FAILED, 2)
    assert not await worker.run_once() and len(comet.calls) == 2
    await runtime.engine.dispose()


async def test_without_comet_configured_nothing_is_recorded_and_no_worker_runs(database_url) -> None:
    runtime, wiring = await _registrar(database_url, CometWriteback(None, None))
    await _deliver(runtime, wiring, approval_decided())
    assert wiring.workers == [] and await _rows(runtime) == []
    await runtime.engine.dispose()
