"""Write-backs (Comet, and SageMaker Model Registry), out of the event handlers: recorded in the event's
transaction, done by one worker. Each row names its `target`; SageMaker's are recorded by
`record_sagemaker_writeback` for versions the bridge registered (services/registrar/sagemaker_writeback.py
says what is written), Comet's as below.

Which Comet registry entry a version's write-backs may change is decided by the registrar alone: when it
imports a version from a Comet registry model version (POST .../versions/comet with `registry_model`),
`link_comet_import` records that entry and its source experiment (`comet_links`). Lineage a registrant sends
(`lineage.comet.registry_model`, ...) never picks the entry: a version without a link gets no write-back, and
when its lineage names a registry entry anyway, a `skipped` row records why (and it is logged). Before
writing, CometWriteback checks through Comet's REST API that the entry still comes from the linked
experiment; if not, the row is `skipped` with the reason, never written.

A handler calls `record_writeback` (only when Comet is configured and the version is linked):
the row commits with the stage change, and `uow.after_commit(wake.set)` starts the worker at once. The worker
claims one pending row at a time with a lease (`claimed_at`; `SKIP LOCKED` on PostgreSQL), calls Comet
(CometWriteback, idempotent: what is already there is not written again), and marks the row done; a failure is
retried with exponential backoff and the row is marked failed (and logged) after `max_attempts`. A worker
killed mid-call leaves a claim whose lease runs out, so the row is done again: at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registrar.comet import CometRegistration
from services.registrar.comet_writeback import CometWriteback, CometWritebackError, CometWritebackRefused
from services.registrar.models import (
    CometLink,
    CometWritebackRow,
    ModelVersion,
    SageMakerLink,
    WritebackAction,
    WritebackStatus,
    WritebackTarget,
)
from services.registrar.sagemaker_writeback import (
    SageMakerWriteback,
    SageMakerWritebackError,
    SageMakerWritebackRefused,
    package_update,
)
from shared.db import UnitOfWork
from shared.events import utcnow

log = structlog.get_logger()


def claimed_registry_version(version: ModelVersion) -> tuple[str, str] | None:
    """The Comet registry model name and version the version's lineage names: what the registrant sent (or
    the import wrote), so only ever a claim, never a reason to write back."""
    registry = (version.lineage or {}).get("comet") or {}
    if registry.get("registry_model") and registry.get("registry_version"):  # cut to the row's columns
        return str(registry["registry_model"])[:200], str(registry["registry_version"])[:100]
    return None


def link_comet_import(session: AsyncSession, version: ModelVersion, reg: CometRegistration, workspace: str,
                      principal: str) -> None:
    """Record, in the registration's transaction, the registry version the registrar itself read `version`
    from (its Comet import), with that registry version's source experiment. Nothing without a registry model."""
    if not (reg.registry_model and reg.registry_version):
        return
    session.add(CometLink(version=version, workspace=workspace, registry_model=reg.registry_model,
                          registry_version=reg.registry_version, experiment_key=reg.experiment_key, linked_by=principal))


async def record_writeback(
    uow: UnitOfWork, version: ModelVersion, comet: CometWriteback | None, wake: asyncio.Event | None,
    stage: str, action: WritebackAction, decision: str | None = None,
) -> None:
    """Add the write-back row to the handler's transaction: pending for a linked version, skipped (with the
    reason) when it cannot be written; nothing when Comet is not configured or nothing names an entry."""
    if comet is None or not comet.enabled:
        return
    link = await uow.session.get(CometLink, version.id)
    row = CometWritebackRow(stage=stage, action=action, decision=decision, model_version_id=version.id, attempts=0,
                            not_before=utcnow())
    if link is not None and link.workspace == comet.workspace:
        row.model, row.version, row.experiment_key = link.registry_model, link.registry_version, link.experiment_key
        row.status = WritebackStatus.PENDING
        if wake is not None:
            uow.after_commit(wake.set)
    elif link is not None:
        row.model, row.version, row.status = link.registry_model, link.registry_version, WritebackStatus.SKIPPED
        row.last_error = (f"imported from Comet workspace {link.workspace!r}, but write-backs go to {comet.workspace!r} "
                          "(COMET_WORKSPACE) only; not written")
    elif (claimed := claimed_registry_version(version)) is not None:
        row.model, row.version, row.status = *claimed, WritebackStatus.SKIPPED
        row.last_error = (f"{version.id}'s lineage names Comet registry model {claimed[0]} {claimed[1]}, but the "
                          "registrar did not import it from there; not written. To have write-backs, register "
                          f"it with POST /v1/groups/{version.group_name}/versions/comet and registry_model")
    else:
        return
    uow.session.add(row)
    if row.status == WritebackStatus.SKIPPED:
        log.warning("comet_writeback_skipped", model_version_id=version.id, model=row.model, version=row.version,
                    stage=stage, reason=row.last_error)


async def record_sagemaker_writeback(
    uow: UnitOfWork, version: ModelVersion, enabled: bool, wake: asyncio.Event | None, stage: str,
    action: WritebackAction, decision: str | None = None,
) -> None:
    """Add a SageMaker write-back row to the handler's transaction, for a version the bridge registered (its
    package link); nothing otherwise, or when the SageMaker write-back is off."""
    if not enabled:
        return
    link = await uow.session.scalar(select(SageMakerLink).where(SageMakerLink.model_version_id == version.id))
    if link is None:
        return
    uow.session.add(CometWritebackRow(
        target=WritebackTarget.SAGEMAKER, model=link.package_arn, version=str(link.package_version), stage=stage,
        action=action, decision=decision, model_version_id=version.id, attempts=0, not_before=utcnow(),
        status=WritebackStatus.PENDING))
    if wake is not None:
        uow.after_commit(wake.set)


class CometWritebackWorker:
    """Carries out recorded write-backs of every target it has a writer for (Comet when configured,
    SageMaker when given); `run(stop)` loops until stop is set (see the module docstring)."""

    def __init__(
        self, uow_factory: Callable[[], UnitOfWork], comet: CometWriteback, wake: asyncio.Event,
        lease_seconds: float = 120, poll_seconds: float = 10, max_attempts: int = 8, backoff_seconds: float = 2,
        sagemaker: SageMakerWriteback | None = None,
    ):
        self.uow_factory, self.comet, self.wake, self.sagemaker = uow_factory, comet, wake, sagemaker
        self.targets = [t for t, on in ((WritebackTarget.COMET, comet.enabled), (WritebackTarget.SAGEMAKER, sagemaker is not None)) if on]
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds, self.max_attempts, self.backoff_seconds = poll_seconds, max_attempts, backoff_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("comet_writeback_loop_failed")
                worked = False
            if not worked:
                await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wake.wait())]
        await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        self.wake.clear()

    async def run_once(self) -> bool:
        """Claim and carry out one write-back; False when none is due."""
        claimed = await self._claim()
        if claimed is None:
            return False
        row_id, job = claimed
        try:
            changes = await self._apply(job)
        except (CometWritebackError, SageMakerWritebackError) as exc:  # anything else is logged by run(); the lease then runs out
            await self._failed(row_id, job["attempts"], exc)
        except (CometWritebackRefused, SageMakerWritebackRefused) as exc:
            log.warning("comet_writeback_skipped", row=row_id, model=job["model"], version=job["version"], reason=str(exc))
            await self._finish(row_id, WritebackStatus.SKIPPED, str(exc))
        else:
            await self._finish(row_id, WritebackStatus.DONE)
            log.info("comet_writeback_done", model=job["model"], version=job["version"], changes=changes)
        return True

    async def _claim(self) -> tuple[int, dict[str, Any]] | None:
        now = utcnow()
        async with self.uow_factory() as uow:
            due = or_(CometWritebackRow.claimed_at.is_(None), CometWritebackRow.claimed_at < now - self.lease)
            row = await uow.session.scalar(
                select(CometWritebackRow)
                .where(CometWritebackRow.status == WritebackStatus.PENDING, CometWritebackRow.not_before <= now, due,
                       CometWritebackRow.target.in_(self.targets))
                .order_by(CometWritebackRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            row.claimed_at, row.attempts = now, row.attempts + 1
            job = {c: getattr(row, c) for c in ("model", "version", "stage", "action", "decision", "attempts", "experiment_key",
                                                "target", "model_version_id")}
            await uow.commit()
            return row.id, job

    async def _apply(self, job: dict[str, Any]) -> list[str]:
        if job["target"] == WritebackTarget.SAGEMAKER:
            return await self._apply_sagemaker(job)
        source = job["experiment_key"]  # None for rows recorded before links: refused, so skipped
        if job["action"] == WritebackAction.APPROVAL_DECIDED:
            return await self.comet.on_approval_decided(job["model"], job["version"], job["stage"], job["decision"],
                                                        experiment_key=source)
        return await self.comet.on_deployed(job["model"], job["version"], job["stage"], experiment_key=source)

    async def _apply_sagemaker(self, job: dict[str, Any]) -> list[str]:
        """The version's state now (not the row's event): late, repeated or reordered rows end the same."""
        assert self.sagemaker is not None  # only claimed when there is a writer
        async with self.uow_factory() as uow:
            version = await uow.session.get(ModelVersion, job["model_version_id"])
            if version is None:
                raise SageMakerWritebackRefused(f"{job['model_version_id']} is not in the catalog")
            update = package_update(version)
        return await self.sagemaker.apply(job["model"], update)

    async def _failed(self, row_id: int, attempts: int, exc: Exception) -> None:
        if attempts >= self.max_attempts:
            log.error("comet_writeback_failed", row=row_id, attempts=attempts, error=str(exc))
            await self._finish(row_id, WritebackStatus.FAILED, str(exc))
            return
        delay = self.backoff_seconds * 2 ** (attempts - 1)
        log.warning("comet_writeback_retry", row=row_id, attempts=attempts, in_seconds=delay, error=str(exc))
        async with self.uow_factory() as uow:
            row = await uow.session.get(CometWritebackRow, row_id)
            if row is not None:
                row.claimed_at, row.not_before, row.last_error = None, utcnow() + timedelta(seconds=delay), str(exc)
                await uow.commit()

    async def _finish(self, row_id: int, status: WritebackStatus, error: str | None = None) -> None:
        async with self.uow_factory() as uow:
            row = await uow.session.get(CometWritebackRow, row_id)
            if row is not None:
                row.status, row.claimed_at, row.last_error = status, None, error
                await uow.commit()

