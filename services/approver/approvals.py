"""Opening approval requests per stage and deciding them: the approver's domain logic."""

from __future__ import annotations

from sqlalchemy import select

from services.approver.models import ApprovalRequest, KnownVersion, LiveVersion, Vote
from services.approver.policy import StagePolicy
from shared.db import UnitOfWork
from shared.events import (
    ApprovalDecided,
    ApprovalDecidedPayload,
    ApprovalRequested,
    ApprovalRequestedPayload,
    Decision,
    Envelope,
    utcnow,
)


class DecisionRefused(Exception):
    """A decision that may not be taken; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def open_stage(uow: UnitOfWork, version: KnownVersion, stage: StagePolicy, cause: Envelope, public_url: str) -> None:
    """Requests approval of `version` for `stage`, or decides it at once when the stage is automatic."""
    existing = await uow.session.scalar(
        select(ApprovalRequest).where(
            ApprovalRequest.model_version_id == version.model_version_id, ApprovalRequest.stage == stage.name
        )
    )
    if existing is not None:
        return
    request = ApprovalRequest(
        model_version_id=version.model_version_id,
        stage=stage.name,
        status="pending",
        policy_rule=stage.describe(),
        required_approvals=stage.approvers if stage.approval == "manual" else 0,
        approver_group=stage.group,
    )
    uow.session.add(request)
    await uow.session.flush()
    if stage.approval == "automatic":
        checks = stage.checks(version.metrics)
        decision: Decision = "Approved" if all(c.passed for c in checks) else "Rejected"
        failed = ", ".join(f"{c.metric}={c.value} (needs {c.op} {c.threshold})" for c in checks if not c.passed)
        _decide(uow, request, version, decision, ["policy"], cause.event_id, automatic=True, comment=failed or None)
        return
    live = await uow.session.get(LiveVersion, (version.group_name, stage.name))
    uow.publish(
        cause.caused(
            ApprovalRequested,
            "approver",
            ApprovalRequestedPayload(
                group=version.group_name,
                version=version.version,
                model_version_id=version.model_version_id,
                approval_id=request.id,
                stage=stage.name,
                registered_by=version.registered_by,
                artifact_uri=version.artifact_uri,
                policy_rule=request.policy_rule,
                required_approvals=request.required_approvals,
                approver_group=stage.group,
                metrics=version.metrics,
                live_model_version_id=live.model_version_id if live else None,
                model_card_summary=version.model_card_summary,
                lineage=version.lineage,
                decide_url=f"{public_url}/v1/approvals/{request.id}/decision",
                decide_command=f"modelgate approve {request.id}",
            ),
        )
    )


async def decide(
    uow: UnitOfWork, approval_id: str, approver: str, groups: list[str], decision: Decision, comment: str | None
) -> ApprovalRequest:
    """Records one approver's vote; decides the request when it is a rejection or the last approval needed."""
    request = await uow.session.get(ApprovalRequest, approval_id, with_for_update=True)
    if request is None:
        raise DecisionRefused(404, f"no approval request {approval_id}")
    if request.status != "pending":
        raise DecisionRefused(409, f"approval request {approval_id} is already {request.status}")
    version = await uow.session.get(KnownVersion, request.model_version_id)
    assert version is not None
    if approver == version.registered_by:
        raise DecisionRefused(403, f"{approver} registered {version.model_version_id} and cannot approve it")
    if request.approver_group and request.approver_group not in groups:
        raise DecisionRefused(403, f"{approver} is not in approver group '{request.approver_group}'")
    if decision == "Rejected" and not comment:
        raise DecisionRefused(422, "a rejection needs a comment saying why")
    votes = (await uow.session.scalars(select(Vote).where(Vote.approval_id == approval_id))).all()
    if any(v.approver == approver for v in votes):
        raise DecisionRefused(409, f"{approver} has already voted on {approval_id}")
    uow.session.add(Vote(approval_id=approval_id, approver=approver, decision=decision, comment=comment))
    approvers = sorted({v.approver for v in votes if v.decision == "Approved"} | {approver})
    if decision == "Rejected":
        _decide(uow, request, version, "Rejected", [approver], None, automatic=False, comment=comment)
    elif len(approvers) >= request.required_approvals:
        _decide(uow, request, version, "Approved", approvers, None, automatic=False, comment=comment)
    return request


def _decide(
    uow: UnitOfWork,
    request: ApprovalRequest,
    version: KnownVersion,
    decision: Decision,
    decided_by: list[str],
    causation_id: str | None,
    automatic: bool,
    comment: str | None,
) -> None:
    request.status = decision
    request.decided_at = utcnow()
    uow.publish(
        ApprovalDecided(
            producer="approver",
            correlation_id=version.model_version_id,
            causation_id=causation_id,
            payload=ApprovalDecidedPayload(
                group=version.group_name,
                version=version.version,
                model_version_id=version.model_version_id,
                approval_id=request.id,
                stage=request.stage,
                decision=decision,
                decided_by=decided_by,
                automatic=automatic,
                policy_rule=request.policy_rule,
                artifact_uri=version.artifact_uri,
                comment=comment,
            ),
        )
    )
