"""Decision links: signed, expiring, single-use links an approver decides with, without a token."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.approver import links
from services.approver.auth import enabled_principal
from services.approver.context import Approver
from services.approver.decision_page import render_decision_page
from services.approver.deps import ApproverDep, refusal
from services.approver.models import UsedLink
from services.approver.routes.approvals import record_decision
from services.approver.schemas import ApprovalOut, DecisionIn, LinkInfo, LinkOut
from services.approver.views import one_approval
from shared.errors import Refused
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Principal

log = structlog.get_logger()
router = APIRouter(tags=["decision links"])


@router.post(
    "/v1/approvals/{approval_id}/decision-links",
    response_model=LinkOut,
    status_code=201,
    summary="A signed, expiring, single-use decision link for the calling approver",
)
async def create_link(approval_id: str, approver_ctx: ApproverDep, session: SessionDep, approver: CurrentPrincipal) -> LinkOut:
    signer = approver_ctx.links()
    if approver.via == "oidc":
        raise Refused(409, "decision links are issued to principals modelgate keeps; an SSO user decides in the console or with a token")
    await one_approval(session, approver_ctx.urls, approval_id)
    token, claims = signer.issue(approval_id, approver.name, approver_ctx.settings.link_ttl)
    log.info("decision_link_issued", approval_id=approval_id, approver=approver.name, expires_at=claims.expires_at.isoformat())
    url = links.link_url(approver_ctx.urls.api, approval_id, token)
    return LinkOut(url=url, approval_id=approval_id, approver=approver.name, expires_at=claims.expires_at)


@router.get(
    "/v1/approvals/{approval_id}/decision-link",
    response_model=LinkInfo,
    summary="What a decision link decides (an HTML page for browsers); does not use the link up",
)
async def show_link(
    approval_id: str, request: Request, approver_ctx: ApproverDep, session: SessionDep,
    token: str = Query(..., description="The link's token"),
) -> Any:
    claims, approver = await verified_link(approver_ctx, approval_id, token)
    used = await session.get(UsedLink, claims.nonce) is not None
    approval = await one_approval(session, approver_ctx.urls, approval_id)
    info = LinkInfo(approver=approver.name, expires_at=claims.expires_at, used=used, approval=approval)
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(render_decision_page(info.model_dump(mode="json")))
    return info


@router.post("/v1/approvals/{approval_id}/decision-link", response_model=ApprovalOut, summary="Approve or reject with a decision link (once)")
async def decide_with_link(
    approval_id: str, body: DecisionIn, approver_ctx: ApproverDep, token: str = Query(..., description="The link's token")
) -> ApprovalOut:
    claims, approver = await verified_link(approver_ctx, approval_id, token)
    return await record_decision(approver_ctx, approval_id, approver, body, via="link", claims=claims)


async def verified_link(approver_ctx: Approver, approval_id: str, token: str) -> tuple[links.LinkClaims, Principal]:
    signer = approver_ctx.links()
    try:
        claims = signer.read(token)
    except Refused as refused:
        raise await refusal(approver_ctx, refused, approval_id, None, "link") from None
    try:
        links.check(claims, approval_id)
        async with approver_ctx.runtime.uow() as uow:
            return claims, await enabled_principal(uow, claims.approver)
    except Refused as refused:
        raise await refusal(approver_ctx, refused, approval_id, claims.approver, "link") from None
