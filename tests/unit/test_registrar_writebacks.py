"""The registrar's Comet write-backs: recorded by the handlers, carried out by the worker after commit,
retried with backoff and given up after max_attempts; only for versions the registrar's Comet import linked
(never for registry entries named by a registrant's lineage). On SQLite and PostgreSQL (SKIP LOCKED)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import bootstrap
from services.registrar.catalog import Registration, register
from services.registrar.comet_writeback import CometWriteback, CometWritebackError, CometWritebackRefused
from services.registrar.models import CometLink, CometWritebackRow, WritebackStatus
from services.registrar.settings import RegistrarSettings
from services.registrar.writebacks import CometWritebackWorker
from shared.db import make_engine
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.factories import approval_decided

FROM_REGISTRY = {"comet": {"registry_model": "fraud-xgb", "registry_version": "1.0.0"}}


class FakeComet(CometWriteback):
    """Stands in for the Comet client; `source` is the experiment the registry version comes from."""

    def __init__(self, failures: int = 0, source: str = "exp1"):
        super().__init__("key", "acme")
        self.failures, self.calls, self.source = failures, [], source

    async def on_approval_decided(self, model_name, version, stage, decision, *, experiment_key):
        self.calls.append((model_name, version, stage, decision, experiment_key))
        if self.failures:
            self.failures -= 1
            raise CometWritebackError("Comet is down")
        if experiment_key != self.source:
            raise CometWritebackRefused(f"comes from experiment {self.source!r}, not {experiment_key!r}")
        return [f"tag:{stage}-approved"]


async def _registrar(url: str, comet: CometWriteback, linked_workspace: str | None = "acme"):
    """fraud/1, whose lineage names a registry version; linked to it (as the Comet import does) unless
    `linked_workspace` is None."""
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    runtime = Runtime(settings=RegistrarSettings(database_url=url), engine=engine, sessionmaker=sessionmaker, aws={})
    async with runtime.uow() as uow:
        version = await register(uow, "fraud", Registration(artifact_uri="s3://b/m", registered_by="ana", lineage=FROM_REGISTRY))
        if linked_workspace is not None:
            uow.session.add(CometLink(version=version, workspace=linked_workspace, registry_model="fraud-xgb",
                                      registry_version="1.0.0", experiment_key="exp1", linked_by="ana"))
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
    assert comet.calls == [("fraud-xgb", "1.0.0", "dev", "Approved", "exp1")]
    [row] = await _rows(runtime)
    assert (row.status, row.attempts, row.model_version_id) == (WritebackStatus.DONE, 1, "fraud/1")
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


async def test_a_registry_entry_named_only_by_lineage_is_skipped_with_the_reason_and_comet_never_called(database_url) -> None:
    comet = FakeComet()
    runtime, wiring = await _registrar(database_url, comet, linked_workspace=None)
    [worker] = wiring.workers
    await _deliver(runtime, wiring, approval_decided())
    assert not await worker.run_once() and comet.calls == []
    [row] = await _rows(runtime)
    assert (row.status, row.model, row.version) == (WritebackStatus.SKIPPED, "fraud-xgb", "1.0.0")
    assert "registrar did not import it from there" in row.last_error and "/versions/comet" in row.last_error
    await runtime.engine.dispose()


async def test_a_version_imported_from_another_workspace_is_not_written_to_the_configured_one(database_url) -> None:
    comet = FakeComet()
    runtime, wiring = await _registrar(database_url, comet, linked_workspace="other-team")
    await _deliver(runtime, wiring, approval_decided())
    assert not await wiring.workers[0].run_once() and comet.calls == []
    [row] = await _rows(runtime)
    assert row.status == WritebackStatus.SKIPPED and "'other-team'" in row.last_error
    await runtime.engine.dispose()


async def test_a_registry_entry_that_no_longer_comes_from_the_linked_experiment_is_skipped_not_retried(database_url) -> None:
    comet = FakeComet(source="exp-of-someone-else")  # e.g. the registry model was deleted and made again
    runtime, wiring = await _registrar(database_url, comet)
    await _deliver(runtime, wiring, approval_decided())
    assert await wiring.workers[0].run_once() and not await wiring.workers[0].run_once()
    [row] = await _rows(runtime)
    assert (row.status, row.attempts) == (WritebackStatus.SKIPPED, 1) and "exp-of-someone-else" in row.last_error
    await runtime.engine.dispose()


async def test_an_overlong_registry_name_in_lineage_is_recorded_cut_and_never_stops_the_event(database_url) -> None:
    comet = FakeComet()
    runtime, wiring = await _registrar(database_url, comet, linked_workspace=None)
    async with runtime.uow() as uow:
        lineage = {"comet": {"registry_model": "m" * 5000, "registry_version": "9" * 500}}
        await register(uow, "long", Registration(artifact_uri="s3://b/m", registered_by="ana", lineage=lineage))
        await uow.commit()
    await _deliver(runtime, wiring, approval_decided(group="long"))
    [row] = await _rows(runtime)
    assert (row.status, len(row.model), len(row.version)) == (WritebackStatus.SKIPPED, 200, 100)
    await runtime.engine.dispose()
