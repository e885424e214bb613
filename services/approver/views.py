"""Approval requests as the API shows them: with votes, thresholds, what is live, and how to decide."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.approver.approvals import PENDING, Urls
from services.approver.models import ApprovalRequest, KnownVersion, LiveVersion, Vote
from services.approver.schemas import ApprovalOut, VoteOut
from shared.events import MetricCheck
from shared.identity import Principal


async def approvals_where(
    session: AsyncSession, urls: Urls, *conditions: Any, limit: int | None = None, offset: int = 0
) -> list[ApprovalOut]:
    """The requests matching `conditions`, oldest first (`limit` of them from `offset`, when given)."""
    query = (select(ApprovalRequest, KnownVersion).join(KnownVersion).where(*conditions)
             .order_by(ApprovalRequest.created_at, ApprovalRequest.id).limit(limit).offset(offset))
    rows = (await session.execute(query)).all()
    ids = [r.id for r, _ in rows]
    votes = (await session.scalars(select(Vote).where(Vote.approval_id.in_(ids)).order_by(Vote.at))).all() if ids else []
    live = {(lv.group_name, lv.stage): lv.model_version_id for lv in await session.scalars(select(LiveVersion))}
    by_request: dict[str, list[Vote]] = {}
    for vote in votes:
        by_request.setdefault(vote.approval_id, []).append(vote)
    return [_out(r, v, by_request.get(r.id, []), live.get((v.group_name, r.stage)), urls) for r, v in rows]


async def one_approval(session: AsyncSession, urls: Urls, approval_id: str) -> ApprovalOut:
    found = await approvals_where(session, urls, ApprovalRequest.id == approval_id)
    if not found:
        raise HTTPException(404, f"no approval request {approval_id}")
    return found[0]


def may_vote(approval: ApprovalOut, approver: Principal) -> bool:
    return (
        approval.status == PENDING
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
        artifact_digest=version.artifact_digest,
        artifact_version_id=version.artifact_version_id,
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
