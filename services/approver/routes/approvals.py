"""Approval requests: list and read them, and decide with an approver's token."""

from __future__ import annotations

from typing import Any, Literal

import structlog
from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.approver import links
from services.approver.approvals import PENDING, decide
from services.approver.auth import principal_of
from services.approver.context import Approver as ApproverParts
from services.approver.deps import ApproverDep, refusal
from services.approver.models import ApprovalRequest, KnownVersion
from services.approver.models import Principal as PrincipalRow
from services.approver.schemas import ApprovalOut, DecisionIn
from services.approver.views import approvals_where, may_vote, one_approval
from shared.errors import Refused
from shared.http import CurrentPrincipal, SessionDep
from shared.identity import Principal, Role, normalise_name
from shared.limits import LIMITS, Name, PageLimit, PageOffset, one_page

log = structlog.get_logger()
router = APIRouter(tags=["approvals"])


@router.get("/v1/approvals", response_model=list[ApprovalOut], summary="List approval requests")
async def list_approvals(
    response: Response,
    approver_ctx: ApproverDep,
    session: SessionDep,
    caller: CurrentPrincipal,
    status: Literal["pending", "decided", "all"] = Query("pending"),
    group: Name | None = Query(None, description="Only this model group"),
    stage: Name | None = Query(None),
    model_version_id: Name | None = Query(None, description='"<group>/<version>"'),
    approver: Name | None = Query(None, description="Only the pending requests this approver may vote on now "
                                 "('me', or another's name for an admin or auditor)"),
    limit: PageLimit = LIMITS.max_page_size,
    offset: PageOffset = 0,
) -> list[ApprovalOut]:
    """Oldest first, a page at a time: X-Next-Offset, when present, is the `offset` of the next page (with
    `approver`, a page holds only the page's requests that approver may vote on, so it may be short)."""
    caller.require(Role.VIEWER, to="list approval requests")
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
    found = one_page(await approvals_where(session, approver_ctx.urls, *conditions, limit=limit + 1, offset=offset),
                     limit, offset, response)
    if approver is None:
        return found
    if approver in ("me", caller.name):
        return [a for a in found if may_vote(a, caller)]
    caller.require(Role.AUDITOR, to="list what another approver may vote on")
    person = await principal_named(session, approver)
    return [a for a in found if person is not None and may_vote(a, person)]


async def principal_named(session: AsyncSession, name: str) -> Principal | None:
    """The enabled principal of that name (None for an unknown name: the answer does not tell who exists)."""
    try:
        row = await session.get(PrincipalRow, normalise_name(name))
    except ValueError:
        return None
    return principal_of(row) if row is not None and row.disabled_at is None else None


@router.get("/v1/approvals/{approval_id}", response_model=ApprovalOut, summary="One approval request")
async def get_approval(approval_id: str, approver_ctx: ApproverDep, session: SessionDep, caller: CurrentPrincipal) -> ApprovalOut:
    caller.require(Role.VIEWER, to="read approval requests")
    return await one_approval(session, approver_ctx.urls, approval_id)


@router.post(
    "/v1/approvals/{approval_id}/decision",
    response_model=ApprovalOut,
    summary="Approve or reject (Authorization: Bearer <approver token>)",
    responses={401: {"description": "no, unknown or disabled token"}, 403: {"description": "not allowed to decide this"}},
)
async def post_decision(approval_id: str, body: DecisionIn, approver_ctx: ApproverDep, approver: CurrentPrincipal) -> ApprovalOut:
    return await record_decision(approver_ctx, approval_id, approver, body, via="token")


async def record_decision(
    approver_ctx: ApproverParts, approval_id: str, approver: Principal, body: DecisionIn, via: str,
    claims: links.LinkClaims | None = None,
) -> ApprovalOut:
    """One vote, in one transaction (with the link used up, for a link); refusals are audited."""
    decision = "Approved" if body.decision == "approve" else "Rejected"
    try:
        async with approver_ctx.runtime.uow() as uow:
            if claims is not None:
                await links.consume(uow, claims)
            await decide(uow, approval_id, approver.name, list(approver.groups), decision, body.comment, via=via,
                         policy=approver_ctx.policy)
            await uow.commit()
    except Refused as refused:
        raise await refusal(approver_ctx, refused, approval_id, approver.name, via) from None
    except IntegrityError:  # a concurrent vote, or use of the same link, won
        concurrent = Refused(409, "a concurrent decision on this request won; reload it")
        raise await refusal(approver_ctx, concurrent, approval_id, approver.name, via) from None
    log.info("vote_recorded", approver=approver.name, approval_id=approval_id, decision=decision, via=via)
    async with approver_ctx.runtime.sessionmaker() as session:
        return await one_approval(session, approver_ctx.urls, approval_id)
