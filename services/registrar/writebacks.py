"""Comet write-backs, out of the event handlers: recorded in the event's transaction, done by a worker.

A handler calls `record_writeback` (only when Comet is configured and the version came from Comet's registry):
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

from services.registrar.comet_writeback import CometWriteback, CometWritebackError
from services.registrar.models import CometWritebackRow, ModelVersion, WritebackAction, WritebackStatus
from shared.db import UnitOfWork
from shared.events import utcnow

log = structlog.get_logger()


def comet_registry_version(version: ModelVersion) -> tuple[str, str] | None:
    """Comet's registry model name and version, when this version came from Comet's registry."""
    registry = (version.lineage or {}).get("comet") or {}
    if registry.get("registry_model") and registry.get("registry_version"):
        return registry["registry_model"], str(registry["registry_version"])
    return None


def record_writeback(
    uow: UnitOfWork, version: ModelVersion, comet: CometWriteback | None, wake: asyncio.Event | None,
    stage: str, action: WritebackAction, decision: str | None = None,
) -> None:
    """Add the write-back row to the handler's transaction (nothing when Comet is not configured)."""
    if comet is None or not comet.enabled or (registry := comet_registry_version(version)) is None:
        return
    model, registry_version = registry
    uow.session.add(CometWritebackRow(
        model=model, version=registry_version, stage=stage, action=action, decision=decision,
        status=WritebackStatus.PENDING, attempts=0, not_before=utcnow(),
    ))
    if wake is not None:
        uow.after_commit(wake.set)


class CometWritebackWorker:
    """Carries out recorded write-backs; `run(stop)` loops until stop is set (see the module docstring)."""

    def __init__(
        self, uow_factory: Callable[[], UnitOfWork], comet: CometWriteback, wake: asyncio.Event,
        lease_seconds: float = 120, poll_seconds: float = 10, max_attempts: int = 8, backoff_seconds: float = 2,
    ):
        self.uow_factory, self.comet, self.wake = uow_factory, comet, wake
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
        except CometWritebackError as exc:  # anything else is logged by run(); the lease then runs out
            await self._failed(row_id, job["attempts"], exc)
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
                .where(CometWritebackRow.status == WritebackStatus.PENDING, CometWritebackRow.not_before <= now, due)
                .order_by(CometWritebackRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            row.claimed_at, row.attempts = now, row.attempts + 1
            job = {c: getattr(row, c) for c in ("model", "version", "stage", "action", "decision", "attempts")}
            await uow.commit()
            return row.id, job

    async def _apply(self, job: dict[str, Any]) -> list[str]:
        if job["action"] == WritebackAction.APPROVAL_DECIDED:
            return await self.comet.on_approval_decided(job["model"], job["version"], job["stage"], job["decision"])
        return await self.comet.on_deployed(job["model"], job["version"], job["stage"])

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

