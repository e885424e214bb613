"""The approver's HTTP API: approval requests, authenticated decisions, decision links, policy and audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.approver import audit, links
from services.approver.approvals import PENDING, DecisionRefused, Urls, decide
from services.approver.auth import Identity, authenticate, enabled_approver
from services.approver.decision_page import render_decision_page
from services.approver.models import ApprovalRequest, Approver, KnownVersion, LiveVersion, UsedLink, Vote
from services.approver.policy import Policy, format_duration
from services.console import console_router
from shared.events import MetricCheck
from shared.service import Runtime

log = structlog.get_logger()


class VoteOut(BaseModel):
    approver: str
    decision: str
    comment: str | None
    via: str
    at: datetime


class ApprovalOut(BaseModel):
    approval_id: str
    model_version_id: str
    group: str
    version: int
    stage: str
    status: str = Field(description="pending, Approved or Rejected")
    policy_rule: str
    required_approvals: int
    approved_by: list[str]
    approver_group: str | None
    eligible_groups: list[str] = Field(description="Groups whose members may vote (the stage's, and the wider one once escalated)")
    escalated: bool
    registered_by: str
    artifact_uri: str
    metrics: dict[str, float]
    checks: list[MetricCheck] = Field(description="The version's metrics against the stage's thresholds")
    model_card_summary: str | None
    lineage: dict[str, Any]
    live_model_version_id: str | None = Field(description="What is deployed in this stage now")
    votes: list[VoteOut]
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    closed_reason: str | None = Field(description="Why it closed without a vote: thresholds, expiry, supersession")
    superseded_by: str | None
    decide_url: str
    decide_command: str
    console_url: str | None


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=4000, description="Required for a rejection")


class LinkOut(BaseModel):
    url: str
    approval_id: str
    approver: str
    expires_at: datetime


class LinkInfo(BaseModel):
    approver: str
    expires_at: datetime
    used: bool
    approval: ApprovalOut


class ApproverOut(BaseModel):
    name: str
    groups: list[str]


class StageOut(BaseModel):
    name: str
    approval: str
    rule: str
    thresholds: dict[str, str]
    approvers: int | None
    group: str | None
    expires_after: str | None
    on_expiry: str | None
    escalate_to: str | None
    supersede: bool


def build_api(runtime: Runtime, policy: Policy, urls: Urls) -> FastAPI:
    app = FastAPI(
        title="modelgate approver",
        version="0.1.0",
        description="Approval requests per stage, authenticated decisions, decision links and the audit trail.",
    )
    settings = runtime.settings
    bearer = HTTPBearer(auto_error=False, description="An approver's API token")

    async def current_approver(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
        try:
            if credentials is None:
                raise DecisionRefused(401, "send 'Authorization: Bearer <your approver token>'")
            async with runtime.uow() as uow:
                return await authenticate(uow, credentials.credentials)
        except DecisionRefused as refused:
            raise await refusal(refused, approval_id=None, approver=None, via="token") from None

    async def refusal(refused: DecisionRefused, approval_id: str | None, approver: str | None, via: str) -> HTTPException:
        """Logs (and audits, when we know who) a refused decision; the answer says why."""
        log.warning("decision_refused", status=refused.status, reason=str(refused), approval_id=approval_id, approver=approver, via=via)
        if approver and refused.status in (401, 403):
            async with runtime.uow() as uow:
                request = await uow.session.get(ApprovalRequest, approval_id) if approval_id else None
                audit.record(uow, "refused", approver, request, reason=str(refused), status=refused.status, via=via)
                await uow.commit()
        headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
        return HTTPException(refused.status, str(refused), headers=headers)

    async def record_decision(
        approval_id: str, approver: Identity, body: DecisionIn, via: str, claims: links.LinkClaims | None = None
    ) -> ApprovalOut:
        decision = "Approved" if body.decision == "approve" else "Rejected"
        try:
            async with runtime.uow() as uow:
                if claims is not None:
                    await links.consume(uow, claims)
                await decide(uow, approval_id, approver.name, approver.groups, decision, body.comment, via=via)
                await uow.commit()
        except DecisionRefused as refused:
            raise await refusal(refused, approval_id, approver.name, via) from None
        except IntegrityError:  # a concurrent vote, or use of the same link, won
            concurrent = DecisionRefused(409, "a concurrent decision on this request won; reload it")
            raise await refusal(concurrent, approval_id, approver.name, via) from None
        log.info("vote_recorded", approver=approver.name, approval_id=approval_id, decision=decision, via=via)
        return await approval(approval_id)

    async def approval(approval_id: str) -> ApprovalOut:
        found = await approvals_where(ApprovalRequest.id == approval_id)
        if not found:
            raise HTTPException(404, f"no approval request {approval_id}")
        return found[0]

    async def approvals_where(*conditions: Any) -> list[ApprovalOut]:
        query = select(ApprovalRequest, KnownVersion).join(KnownVersion).where(*conditions).order_by(ApprovalRequest.created_at)
        async with runtime.sessionmaker() as session:
            rows = (await session.execute(query)).all()
            ids = [r.id for r, _ in rows]
            votes = (await session.scalars(select(Vote).where(Vote.approval_id.in_(ids)).order_by(Vote.at))).all() if ids else []
            live = {(lv.group_name, lv.stage): lv.model_version_id for lv in await session.scalars(select(LiveVersion))}
        by_request: dict[str, list[Vote]] = {}
        for vote in votes:
            by_request.setdefault(vote.approval_id, []).append(vote)
        return [_out(r, v, by_request.get(r.id, []), live.get((v.group_name, r.stage)), urls) for r, v in rows]

    async def verified_link(approval_id: str, token: str) -> tuple[links.LinkClaims, Identity]:
        signer: links.LinkSigner | None = runtime.state.get("links")
        if signer is None:
            raise HTTPException(503, "decision links are not available: the approver has no link key yet")
        try:
            claims = signer.read(token)
        except DecisionRefused as refused:
            raise await refusal(refused, approval_id, None, "link") from None
        try:
            links.check(claims, approval_id)
            async with runtime.uow() as uow:
                return claims, await enabled_approver(uow, claims.approver)
        except DecisionRefused as refused:
            raise await refusal(refused, approval_id, claims.approver, "link") from None

    @app.get("/v1/approvals", response_model=list[ApprovalOut], tags=["approvals"], summary="List approval requests")
    async def list_approvals(
        status: Literal["pending", "decided", "all"] = Query("pending"),
        group: str | None = Query(None, description="Only this model group"),
        stage: str | None = Query(None),
        model_version_id: str | None = Query(None, description='"<group>/<version>"'),
        approver: str | None = Query(None, description="Only the pending requests this approver may vote on now"),
    ) -> list[ApprovalOut]:
        conditions: list[Any] = []
        if status == "pending":
            conditions.append(ApprovalRequest.status == PENDING)
        elif status == "decided":
            conditions.append(ApprovalRequest.status != PENDING)
        if group:
            conditions.append(KnownVersion.group_name == group)
        if stage:
            conditions.append(ApprovalRequest.stage == stage)
        if model_version_id:
            conditions.append(ApprovalRequest.model_version_id == model_version_id)
        found = await approvals_where(*conditions)
        if approver is None:
            return found
        async with runtime.sessionmaker() as session:
            person = await session.get(Approver, approver)
        if person is None:
            raise HTTPException(422, f"no approver named {approver}")
        return [a for a in found if _may_vote(a, person)]

    @app.get("/v1/approvals/{approval_id}", response_model=ApprovalOut, tags=["approvals"], summary="One approval request")
    async def get_approval(approval_id: str) -> ApprovalOut:
        return await approval(approval_id)

    @app.post(
        "/v1/approvals/{approval_id}/decision",
        response_model=ApprovalOut,
        tags=["approvals"],
        summary="Approve or reject (Authorization: Bearer <approver token>)",
        responses={401: {"description": "no, unknown or disabled token"}, 403: {"description": "not allowed to decide this"}},
    )
    async def post_decision(approval_id: str, body: DecisionIn, approver: Identity = Depends(current_approver)) -> ApprovalOut:
        return await record_decision(approval_id, approver, body, via="token")

    @app.post(
        "/v1/approvals/{approval_id}/decision-links",
        response_model=LinkOut,
        status_code=201,
        tags=["decision links"],
        summary="A signed, expiring, single-use decision link for the calling approver",
    )
    async def create_link(approval_id: str, approver: Identity = Depends(current_approver)) -> LinkOut:
        signer: links.LinkSigner | None = runtime.state.get("links")
        if signer is None:
            raise HTTPException(503, "decision links are not available: the approver has no link key yet")
        await approval(approval_id)
        token, claims = signer.issue(approval_id, approver.name, settings.link_ttl)  # type: ignore[attr-defined]
        log.info("decision_link_issued", approval_id=approval_id, approver=approver.name, expires_at=claims.expires_at.isoformat())
        return LinkOut(url=links.link_url(urls.api, approval_id, token), approval_id=approval_id, approver=approver.name, expires_at=claims.expires_at)

    @app.get(
        "/v1/approvals/{approval_id}/decision-link",
        response_model=LinkInfo,
        tags=["decision links"],
        summary="What a decision link decides (an HTML page for browsers); does not use the link up",
    )
    async def show_link(approval_id: str, request: Request, token: str = Query(..., description="The link's token")) -> Any:
        claims, approver = await verified_link(approval_id, token)
        async with runtime.sessionmaker() as session:
            used = await session.get(UsedLink, claims.nonce) is not None
        info = LinkInfo(approver=approver.name, expires_at=claims.expires_at, used=used, approval=await approval(approval_id))
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(render_decision_page(info.model_dump(mode="json")))
        return info

    @app.post(
        "/v1/approvals/{approval_id}/decision-link",
        response_model=ApprovalOut,
        tags=["decision links"],
        summary="Approve or reject with a decision link (once)",
    )
    async def decide_with_link(approval_id: str, body: DecisionIn, token: str = Query(..., description="The link's token")) -> ApprovalOut:
        claims, approver = await verified_link(approval_id, token)
        return await record_decision(approval_id, approver, body, via="link", claims=claims)

    @app.get("/v1/me", response_model=ApproverOut, tags=["approvers"], summary="Who this token belongs to")
    async def me(approver: Identity = Depends(current_approver)) -> ApproverOut:
        return ApproverOut(name=approver.name, groups=approver.groups)

    @app.get("/v1/policy", response_model=list[StageOut], tags=["policy"], summary="The stages and their rules, in order")
    async def get_policy() -> list[StageOut]:
        return [
            StageOut(
                name=s.name,
                approval=s.approval,
                rule=s.describe(),
                thresholds=s.thresholds,
                approvers=s.approvers if s.approval == "manual" else None,
                group=s.group,
                expires_after=format_duration(s.expires_after) if s.expires_after else None,
                on_expiry=s.on_expiry if s.expires_after else None,
                escalate_to=s.escalate_to,
                supersede=s.supersede,
            )
            for s in policy.stages
        ]

    @app.get(
        "/v1/audit",
        response_model=list[audit.AuditOut],
        tags=["audit"],
        summary="The audit trail, oldest first, as JSON or CSV",
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def get_audit(
        model_version_id: str | None = Query(None, description='"<group>/<version>"'),
        group: str | None = Query(None),
        approval_id: str | None = Query(None),
        since: Annotated[AwareDatetime | None, Query(description="From this instant (inclusive), e.g. 2025-01-31T00:00:00Z")] = None,
        until: Annotated[AwareDatetime | None, Query(description="Up to this instant (exclusive)")] = None,
        format: Literal["json", "csv"] = Query("json"),
    ) -> Any:
        if since and until and since >= until:
            raise HTTPException(422, "since must be before until")
        async with runtime.sessionmaker() as session:
            rows = await audit.entries(
                session, model_version_id=model_version_id, group=group, approval_id=approval_id, since=since, until=until
            )
        if format == "csv":
            return Response(
                audit.to_csv(rows), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="audit.csv"'}
            )
        return rows

    app.include_router(console_router())  # the web console (services/console), under /console
    return app


def _may_vote(approval: ApprovalOut, approver: Approver) -> bool:
    return (
        approval.status == PENDING
        and approver.disabled_at is None
        and approver.name != approval.registered_by
        and bool(set(approver.groups) & set(approval.eligible_groups))
        and all(v.approver != approver.name for v in approval.votes)
    )


def _out(request: ApprovalRequest, version: KnownVersion, votes: list[Vote], live: str | None, urls: Urls) -> ApprovalOut:
    return ApprovalOut(
        approval_id=request.id,
        model_version_id=request.model_version_id,
        group=version.group_name,
        version=version.version,
        stage=request.stage,
        status=request.status,
        policy_rule=request.policy_rule,
        required_approvals=request.required_approvals,
        approved_by=[v.approver for v in votes if v.decision == "Approved"],
        approver_group=request.approver_group,
        eligible_groups=request.eligible_groups,
        escalated=request.escalated_to is not None,
        registered_by=version.registered_by,
        artifact_uri=version.artifact_uri,
        metrics=version.metrics,
        checks=[MetricCheck.model_validate(c) for c in request.checks or []],
        model_card_summary=version.model_card_summary,
        lineage=version.lineage,
        live_model_version_id=live,
        votes=[VoteOut(approver=v.approver, decision=v.decision, comment=v.comment, via=v.via, at=v.at) for v in votes],
        created_at=request.created_at,
        expires_at=request.expires_at,
        decided_at=request.decided_at,
        closed_reason=request.closed_reason,
        superseded_by=request.superseded_by,
        decide_url=urls.decide(request.id),
        decide_command=f"modelgate approve {request.id}",
        console_url=urls.console_page(request.id),
    )
