"""The approver on a real database without a bus: its handlers, its domain and its HTTP API in one process.

Shared by the approver's tests (this module has no tests of its own). Events the approver publishes are
read back from its outbox; events it consumes are handled the way the consumer loop handles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.approver import auth
from services.approver.approvals import Urls, decide
from services.approver.audit import AuditOut, entries
from services.approver.auth import ApproverAuthenticator
from services.approver.bootstrap import HANDLERS, oidc_verifier
from services.approver.bootstrap import ROUTERS as APPROVER_ROUTERS
from services.approver.context import Approver as ApproverParts
from services.approver.expiry import expire_due
from services.approver.links import LinkSigner
from services.approver.models import ApprovalRequest
from services.approver.policy import Policy, load_policy
from services.approver.settings import DEFAULT_POLICY, ApproverSettings
from shared.app import build_app
from shared.db import OutboxRow, UnitOfWork, make_engine
from shared.events import (
    Deployed,
    DeployedPayload,
    Envelope,
    ModelRegistered,
    ModelRegisteredPayload,
    parse_event,
    utcnow,
)
from shared.identity import Kind
from shared.migrations import prepare_database
from shared.runtime import Runtime, Wiring
from shared.wiring import inject

GROUPS = {"lee": ["ml-leads"], "kim": ["model-risk"], "raj": ["model-risk"], "ana": ["ml-leads", "model-risk"], "rob": ["risk-committee"]}
ROLES = {"ana": ["registrant"], "admin": ["admin"], "audrey": ["auditor"]}
TOKENS: dict[str, str] = {}  # name -> API token, issued by Approver.start (only their digests are stored)
LINK_KEY = b"k" * 32
PEPPER = b"p" * 32
URLS = Urls("http://approver.test", "http://console.test")


def write_policy(tmp_path: Path, stages: list[dict[str, Any]]) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    return load_policy(path)


@dataclass
class Approver:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    policy: Policy
    signer: LinkSigner = field(default_factory=lambda: LinkSigner(LINK_KEY))

    @classmethod
    async def start(cls, database_url: str, policy: Policy | None = None) -> Approver:
        engine = make_engine(database_url)
        await prepare_database(engine, "approver")
        approver = cls(engine, async_sessionmaker(engine, expire_on_commit=False), policy or load_policy(DEFAULT_POLICY))
        async with approver.uow() as uow:
            for name in sorted({*GROUPS, *ROLES}):
                _, TOKENS[name], _ = await auth.add_principal(  # type: ignore[assignment]
                    uow, PEPPER, "test", name=name, kind=Kind.PERSON, roles=["viewer", *ROLES.get(name, [])], teams=[],
                    groups=GROUPS.get(name, []), oidc_subject=None, ttl=None,
                )
            await uow.commit()
        return approver

    async def close(self) -> None:
        await self.engine.dispose()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def deliver(self, event: Envelope) -> None:
        """Handles one event the way the consumer loop does (idempotent on event_id)."""
        async with self.uow() as uow:
            if await uow.already_processed(event):
                return
            handler = inject(HANDLERS, policy=self.policy, urls=URLS)[event.event_type]
            await handler(event, uow)
            uow.mark_processed(event)
            await uow.commit()

    async def register(self, group: str, version: int, metrics: dict[str, float] | None = None, by: str = "ana") -> ModelRegistered:
        event = ModelRegistered(
            producer="registrar",
            correlation_id=f"{group}/{version}",
            payload=ModelRegisteredPayload(
                group=group,
                version=version,
                model_version_id=f"{group}/{version}",
                artifact_uri=f"s3://bucket/{group}/{version}.bin",
                registered_by=by,
                metrics={"auc": 0.93} if metrics is None else metrics,
                lineage={"experiment": "exp-1", "datasets": [{"name": "tx", "version": "3"}]},
                model_card_summary="Gradient boosting on card transactions.",
            ),
        )
        await self.deliver(event)
        return event

    async def deployed(self, group: str, version: int, stage: str, rollback: bool = False) -> Deployed:
        event = Deployed(
            producer="deployer",
            correlation_id=f"{group}/{version}",
            payload=DeployedPayload(
                group=group,
                version=version,
                model_version_id=f"{group}/{version}",
                deployment_id=f"d-{group}-{version}-{stage}",
                stage=stage,
                target="parameter-store",
                artifact_uri=f"s3://bucket/{group}/{version}.bin",
                parameter_name=f"/modelgate/{group}/{stage}/current",
                rollback=rollback,
                deployed_at=utcnow(),
            ),
        )
        await self.deliver(event)
        return event

    async def published(self, event_type: str | None = None, model_version_id: str | None = None) -> list[Any]:
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
        events = [parse_event(r.body) for r in rows]
        return [
            e
            for e in events
            if (event_type is None or e.event_type == event_type)
            and (model_version_id is None or e.payload.model_version_id == model_version_id)
        ]

    async def request(self, model_version_id: str, stage: str) -> ApprovalRequest:
        async with self.sessionmaker() as session:
            request = await session.scalar(
                select(ApprovalRequest).where(ApprovalRequest.model_version_id == model_version_id, ApprovalRequest.stage == stage)
            )
        assert request is not None, f"no request for {model_version_id} in {stage}"
        return request

    async def vote(self, approval_id: str, who: str, decision: str = "Approved", comment: str | None = None) -> ApprovalRequest:
        async with self.uow() as uow:
            request = await decide(uow, approval_id, who, GROUPS.get(who, []), decision, comment,  # type: ignore[arg-type]
                                   policy=self.policy)
            await uow.commit()
        return request

    async def expire_due(self, now: datetime) -> list[str]:
        return await expire_due(self.uow, self.policy, URLS, now)

    async def audit(self, **filters: Any) -> list[AuditOut]:
        async with self.sessionmaker() as session:
            return await entries(session, **filters)

    @classmethod
    async def restart(cls, database_url: str, policy: Policy | None = None) -> Approver:
        """The approver started again on the same database (nothing seeded)."""
        engine = make_engine(database_url)
        await prepare_database(engine, "approver")
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False), policy or load_policy(DEFAULT_POLICY))

    def app(self, service_key: str | None = None, **settings: Any) -> Any:
        """The approver's FastAPI app (API and console), served in-process; `settings` override ApproverSettings;
        `service_key` is the key siblings present when they ask on a caller's behalf."""
        settings = ApproverSettings(**{"database_url": str(self.engine.url), "public_url": URLS.api,
                                       "console_url": URLS.console or "", **settings})
        runtime = Runtime(settings=settings, engine=self.engine, sessionmaker=self.sessionmaker, aws={})
        parts = ApproverParts(runtime, self.policy, URLS, self.signer, PEPPER)
        authenticator = ApproverAuthenticator(self.sessionmaker, PEPPER, settings, oidc_verifier(settings))
        wiring = Wiring(handlers={}, routers=APPROVER_ROUTERS, context=parts, authenticator=authenticator,
                        service_key=service_key)
        return build_app(runtime, wiring)

    def http(self, **settings: Any) -> httpx.AsyncClient:
        """A client of the approver's HTTP API, served in-process."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app(**settings)), base_url=URLS.api)


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}
