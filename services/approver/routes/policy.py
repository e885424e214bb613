"""The promotion policy: the stages and their rules, in order."""

from __future__ import annotations

from fastapi import APIRouter

from services.approver.deps import ApproverDep
from services.approver.policy import format_duration
from services.approver.schemas import StageOut
from shared.http import CurrentPrincipal
from shared.identity import Principal

router = APIRouter()


@router.get("/v1/me", response_model=Principal, tags=["principals"],
            summary="Who this credential belongs to: name, roles, teams, approver groups (the other services ask this)")
async def me(principal: CurrentPrincipal) -> Principal:
    return principal


@router.get("/v1/policy", response_model=list[StageOut], tags=["policy"], summary="The stages and their rules, in order")
async def get_policy(approver_ctx: ApproverDep, _: CurrentPrincipal) -> list[StageOut]:
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
            rollout=s.rollout.spec(),
        )
        for s in approver_ctx.policy.stages
    ]
