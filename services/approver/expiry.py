"""The worker that escalates or rejects approval requests waiting past their expiry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select

from services.approver.approvals import PENDING, Urls, expire
from services.approver.models import ApprovalRequest
from services.approver.policy import Policy
from shared.db import UnitOfWork
from shared.events import utcnow

log = structlog.get_logger()


async def expire_due(uow_factory: Callable[[], UnitOfWork], policy: Policy, urls: Urls, now: datetime) -> list[str]:
    """Handles every request due at `now`, each in its own transaction; returns what happened to each."""
    async with uow_factory() as uow:
        due = (
            await uow.session.scalars(
                select(ApprovalRequest.id).where(ApprovalRequest.status == PENDING, ApprovalRequest.expires_at <= now)
            )
        ).all()
    outcomes = []
    for approval_id in due:
        async with uow_factory() as uow:
            outcome = await expire(uow, approval_id, policy, urls, now)
            await uow.commit()
        if outcome:
            log.info("approval_request_" + outcome, approval_id=approval_id)
            outcomes.append(outcome)
    return outcomes


@dataclass
class ExpiryWorker:
    """Every `every` seconds, escalates or rejects what waited past its expiry, as the policy says."""

    uow_factory: Callable[[], UnitOfWork]
    policy: Policy
    urls: Urls
    every: float = 30.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await expire_due(self.uow_factory, self.policy, self.urls, utcnow())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly unreachable: try again next round
                log.warning("expiry_check_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
