"""The approver's HTTP API: pending approvals, and authenticated decisions."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
import structlog
from sqlalchemy import select

from services.approver.approvals import DecisionRefused, decide
from services.approver.models import ApprovalRequest, KnownVersion
from services.approver.settings import ApproverSettings
from shared.service import Runtime

log = structlog.get_logger()


class ApprovalOut(BaseModel):
    approval_id: str
    model_version_id: str
    group: str
    version: int
    stage: str
    status: str
    policy_rule: str
    required_approvals: int
    approver_group: str | None
    registered_by: str
    metrics: dict[str, float]
    created_at: datetime
    decided_at: datetime | None


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=4000)


def build_api(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="modelgate approver", version="0.1.0", description="Approval requests and decisions.")
    settings: ApproverSettings = runtime.settings  # type: ignore[assignment]
    bearer = HTTPBearer(auto_error=False)

    def approver(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        if credentials is None:
            raise HTTPException(401, "send 'Authorization: Bearer <your approver token>'")
        for name, token in settings.approver_tokens.items():
            if hmac.compare_digest(token.encode(), credentials.credentials.encode()):
                return name
        log.warning("decision_refused", reason="unknown token")
        raise HTTPException(401, "unknown approver token")

    @app.get("/v1/approvals", response_model=list[ApprovalOut], tags=["approvals"])
    async def list_approvals(status: Literal["pending", "decided", "all"] = Query("pending")) -> list[ApprovalOut]:
        query = select(ApprovalRequest, KnownVersion).join(KnownVersion).order_by(ApprovalRequest.created_at)
        if status == "pending":
            query = query.where(ApprovalRequest.status == "pending")
        elif status == "decided":
            query = query.where(ApprovalRequest.status != "pending")
        async with runtime.sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [_out(request, version) for request, version in rows]

    @app.post("/v1/approvals/{approval_id}/decision", response_model=ApprovalOut, tags=["approvals"])
    async def post_decision(approval_id: str, body: DecisionIn, who: str = Depends(approver)) -> ApprovalOut:
        decision = "Approved" if body.decision == "approve" else "Rejected"
        async with runtime.uow() as uow:
            try:
                request = await decide(
                    uow, approval_id, who, settings.approver_groups.get(who, []), decision, body.comment
                )
            except DecisionRefused as refused:
                log.warning("decision_refused", approver=who, approval_id=approval_id, reason=str(refused))
                raise HTTPException(refused.status, str(refused)) from None
            version = await uow.session.get(KnownVersion, request.model_version_id)
            await uow.commit()
        log.info("vote_recorded", approver=who, approval_id=approval_id, decision=decision)
        return _out(request, version)

    return app


def _out(request: ApprovalRequest, version: KnownVersion | None) -> ApprovalOut:
    assert version is not None
    return ApprovalOut(
        approval_id=request.id,
        model_version_id=request.model_version_id,
        group=version.group_name,
        version=version.version,
        stage=request.stage,
        status=request.status,
        policy_rule=request.policy_rule,
        required_approvals=request.required_approvals,
        approver_group=request.approver_group,
        registered_by=version.registered_by,
        metrics=version.metrics,
        created_at=request.created_at,
        decided_at=request.decided_at,
    )
