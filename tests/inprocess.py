"""The four services' handlers wired together in one process, with a bus made of their outbox tables.

Fast and network-free: for testing the journey's logic. The real bus is tested against LocalStack.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.approver.handlers import build_handlers as approver_handlers
from services.approver.policy import load_policy
from services.approver.settings import DEFAULT_POLICY
from services.deployer.deploy import on_approval_decided
from services.notifier.notify import notify
from services.registrar.handlers import HANDLERS as registrar_handlers
from shared.bus import Handler, Skip
from shared.db import OutboxRow, UnitOfWork, create_tables, make_engine
from shared.events import Envelope, parse_event
from shared.topology import CONSUMES


class FakeSsm:
    def __init__(self) -> None:
        self.parameters: dict[str, str] = {}
        self.writes = 0

    async def put_parameter(self, Name: str, Value: str, **_: Any) -> dict:  # noqa: N803 (boto's names)
        self.parameters[Name] = Value
        self.writes += 1
        return {"Version": self.writes}


@dataclass
class InProcessSystem:
    tmp_path: Any
    ssm: FakeSsm = field(default_factory=FakeSsm)
    sessionmakers: dict[str, async_sessionmaker[AsyncSession]] = field(default_factory=dict)
    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    delivered: list[Envelope] = field(default_factory=list)

    async def start(self) -> InProcessSystem:
        for service in ("registrar", "approver", "deployer", "notifier"):
            engine = make_engine(f"sqlite+aiosqlite:///{self.tmp_path}/{service}.db")
            await create_tables(engine)
            self.sessionmakers[service] = async_sessionmaker(engine, expire_on_commit=False)
        policy = load_policy(DEFAULT_POLICY)
        self.handlers = {
            "registrar": registrar_handlers,
            "approver": approver_handlers(policy, "http://approver"),
            "deployer": {"ApprovalDecided": partial(on_approval_decided, ssm=self.ssm, targets={})},
            "notifier": {t: partial(notify, http=None, webhook_url=None) for t in CONSUMES["notifier"]},
        }
        return self

    def uow(self, service: str) -> UnitOfWork:
        return UnitOfWork(self.sessionmakers[service])

    async def deliver(self, service: str, event: Envelope) -> str:
        """Handles one event the way the consumer loop does (idempotent on event_id)."""
        async with self.uow(service) as uow:
            if await uow.already_processed(event):
                return "duplicate"
            try:
                await self.handlers[service][event.event_type](event, uow)
            except Skip:
                return "skipped"
            uow.mark_processed(event)
            await uow.commit()
        return "handled"

    async def pump(self, rounds: int = 20) -> None:
        """Moves every outbox's events to their consumers until nothing is left to move."""
        for _ in range(rounds):
            moved = 0
            for service, sessionmaker in self.sessionmakers.items():
                async with sessionmaker() as session, session.begin():
                    rows = (await session.scalars(select(OutboxRow).where(OutboxRow.published_at.is_(None)))).all()
                    await session.execute(update(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])).values(published_at=OutboxRow.created_at))
                for row in rows:
                    event = parse_event(row.body)
                    self.delivered.append(event)
                    moved += 1
                    for consumer, types in CONSUMES.items():
                        if event.event_type in types:
                            await self.deliver(consumer, event)
            if not moved:
                return
            await asyncio.sleep(0)
