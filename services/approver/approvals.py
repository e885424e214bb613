"""Approval requests per stage: opening them, the votes on them, and closing them.

A request closes when the policy decides it (thresholds), a vote decides it (a rejection, or the last
approval needed), it expires, or a newer version supersedes it. Every step is audited (audit.py), and
every close is announced as ApprovalDecided so the registrar and the deployer know.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from services.approver import audit
from services.approver.models import ApprovalRequest, KnownVersion, LiveVersion, RequestStatus, Vote
from services.approver.policy import Policy, StagePolicy
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import (
    ApprovalDecided,
    ApprovalDecidedPayload,
    ApprovalRequested,
    ApprovalRequestedPayload,
    Container,
    Decision,
    Envelope,
    MetricCheck,
    RolloutSpec,
    utcnow,
)

PENDING = RequestStatus.PENDING


@dataclass(frozen=True)
class Urls:
    """Where people decide: the approver's API and the web console."""

    api: str
    console: str | None = None

    def decide(self, approval_id: str) -> str:
        return f"{self.api}/v1/approvals/{approval_id}/decision"

    def console_page(self, approval_id: str) -> str | None:
        return f"{self.console}/approvals/{approval_id}" if self.console else None


async def open_stage(
    uow: UnitOfWork, version: KnownVersion, stage: StagePolicy, cause: Envelope, urls: Urls
) -> ApprovalRequest | None:
    """Requests approval of `version` for `stage`, or decides it at once when the policy can."""
    existing = await uow.session.scalar(
        select(ApprovalRequest).where(
            ApprovalRequest.model_version_id == version.model_version_id, ApprovalRequest.stage == stage.name
        )
    )
    if existing is not None:
        return None
    live = await _live_version(uow, version.group_name, stage.name)
    checks = stage.checks(version.metrics, live.metrics if live else None, live.model_version_id if live else None)
    now = utcnow()
    request = ApprovalRequest(
        model_version_id=version.model_version_id,
        group_name=version.group_name,
        version=version.version,
        stage=stage.name,
        status=PENDING,
        policy_rule=stage.describe(),
        required_approvals=stage.approvers if stage.approval == "manual" else 0,
        approver_group=stage.group,
        checks=[c.model_dump() for c in checks],
        created_at=now,
        expires_at=now + stage.expires_after if stage.expires_after else None,
    )
    uow.session.add(request)
    await uow.session.flush()
    audit.record(
        uow, "requested", audit.POLICY, request, reason=f"{cause.event_type} {cause.event_id}",
        checks=request.checks, approver_group=stage.group, required_approvals=request.required_approvals,
        expires_at=request.expires_at.isoformat() if request.expires_at else None,
    )
    failed = [c for c in checks if not c.passed]
    if stage.approval == "automatic" or failed:
        decision: Decision = "Rejected" if failed else "Approved"
        reason = _failed(failed) if failed else "every threshold holds: " + ", ".join(_check(c) for c in checks)
        close(uow, request, version, decision, [audit.POLICY], automatic=True, comment=reason, causation_id=cause.event_id,
              rollout=stage.rollout.spec())
        return request
    superseded_by: list[str] = []
    if stage.supersede:
        superseded_by = await _supersede_in_stage(uow, request, version, stage, cause)
        if superseded_by is None:
            return request
    await announce(uow, request, version, urls, causation_id=cause.event_id, supersedes=superseded_by)
    return request


async def _supersede_in_stage(
    uow: UnitOfWork, request: ApprovalRequest, version: KnownVersion, stage: StagePolicy, cause: Envelope
) -> list[str] | None:
    """The newest version waits for a stage: a request for an older one closes as superseded. Returns the
    older versions this request supersedes, or None when a newer one is pending already (this one closed)."""
    newer = await _pending_in_stage(uow, version.group_name, stage.name, newer_than=version.version)
    if newer:
        close(
            uow, request, version, "Rejected", [audit.POLICY], automatic=True, causation_id=cause.event_id,
            comment=f"superseded by {newer[0].model_version_id}, which is pending already", action="superseded",
            superseded_by=newer[0].model_version_id,
        )
        return None
    superseded_by = []
    for older in await _pending_in_stage(uow, version.group_name, stage.name, older_than=version.version):
        older_version = await uow.session.get(KnownVersion, older.model_version_id)
        assert older_version is not None
        close(
            uow, older, older_version, "Rejected", [audit.POLICY], automatic=True, causation_id=cause.event_id,
            comment=f"superseded by {version.model_version_id}", action="superseded",
            superseded_by=version.model_version_id,
        )
        superseded_by.append(older.model_version_id)
    await uow.session.flush()
    request.open_slot = "open"  # the unique (group, stage, open_slot) makes a concurrent twin retry
    await uow.session.flush()
    return superseded_by


async def decide(
    uow: UnitOfWork,
    approval_id: str,
    approver: str,
    groups: list[str],
    decision: Decision,
    comment: str | None,
    via: str = "token",
    policy: Policy | None = None,
) -> ApprovalRequest:
    """Records one approver's vote; decides the request when it is a rejection or the last approval needed.
    An approval carries the stage's rollout as `policy` says it now (None: all at once)."""
    request = await uow.session.get(ApprovalRequest, approval_id, with_for_update=True)
    if request is None:
        raise Refused(404, f"no approval request {approval_id}")
    if request.status != PENDING:
        why = f": {request.closed_reason}" if request.closed_reason else ""
        raise Refused(409, f"approval request {approval_id} is already {request.status}{why}")
    version = await uow.session.get(KnownVersion, request.model_version_id)
    assert version is not None
    if approver == version.registered_by:
        raise Refused(
            403, f"{approver} registered {version.model_version_id} and cannot approve it (nobody decides on their own version)"
        )
    if not set(groups) & set(request.eligible_groups):
        needed = " or ".join(f"'{g}'" for g in request.eligible_groups)
        raise Refused(403, f"{approver} is not in approver group {needed}, which decides {request.stage}")
    if decision == "Rejected" and not (comment or "").strip():
        raise Refused(422, "a rejection needs a comment saying why")
    votes = (await uow.session.scalars(select(Vote).where(Vote.approval_id == approval_id))).all()
    if any(v.approver == approver for v in votes):
        raise Refused(409, f"{approver} has already voted on {approval_id}")
    uow.session.add(Vote(approval_id=approval_id, approver=approver, decision=decision, comment=comment, via=via))
    approvers = sorted({v.approver for v in votes if v.decision == "Approved"} | {approver})
    audit.record(
        uow, "vote", approver, request, decision=decision, reason=comment, via=via,
        approvals=len(approvers) if decision == "Approved" else None, required_approvals=request.required_approvals,
    )
    if decision == "Rejected":
        close(uow, request, version, "Rejected", [approver], automatic=False, comment=comment)
    elif len(approvers) >= request.required_approvals:
        close(uow, request, version, "Approved", approvers, automatic=False, comment=comment,
              rollout=_rollout_of(policy, request.stage))
    return request


async def expire(uow: UnitOfWork, approval_id: str, policy: Policy, urls: Urls, now: datetime) -> str | None:
    """Escalates or rejects one request that waited past its expiry, as its stage's policy says."""
    request = await uow.session.get(ApprovalRequest, approval_id, with_for_update=True)
    if request is None or request.status != PENDING or request.expires_at is None or request.expires_at > now:
        return None  # decided, or escalated, in the meantime
    version = await uow.session.get(KnownVersion, request.model_version_id)
    assert version is not None
    stage = next((s for s in policy.stages if s.name == request.stage), None)
    if stage and stage.on_expiry == "escalate" and stage.escalate_to and stage.expires_after and not request.escalated_to:
        request.escalated_to = stage.escalate_to
        request.expires_at = now + stage.expires_after
        audit.record(
            uow, "escalated", audit.POLICY, request, reason=f"no decision by {request.approver_group} in time",
            escalated_to=stage.escalate_to, expires_at=request.expires_at.isoformat(),
        )
        await announce(uow, request, version, urls, causation_id=None)
        return "escalated"
    asked = " and ".join(request.eligible_groups)
    close(
        uow, request, version, "Rejected", [audit.POLICY], automatic=True, action="expired", expired=True,
        comment=f"expired: {asked} did not decide by {request.expires_at.isoformat(timespec='seconds')}",
    )
    return "expired"


def close(
    uow: UnitOfWork,
    request: ApprovalRequest,
    version: KnownVersion,
    decision: Decision,
    decided_by: list[str],
    *,
    automatic: bool,
    comment: str | None,
    causation_id: str | None = None,
    action: str = "decided",
    expired: bool = False,
    superseded_by: str | None = None,
    rollout: RolloutSpec | None = None,
) -> None:
    request.status = decision
    request.decided_at = utcnow()
    request.open_slot = None
    request.superseded_by = superseded_by
    if action != "decided":
        request.closed_reason = comment
    audit.record(
        uow, action, ", ".join(decided_by), request, decision=decision, reason=comment, decided_by=decided_by,
        automatic=automatic,
    )
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
                artifact_digest=version.artifact_digest,
                artifact_version_id=version.artifact_version_id,
                containers=[Container.model_validate(c) for c in version.containers or []],
                comment=comment,
                expired=expired,
                superseded_by=superseded_by,
                rollout=rollout if decision == "Approved" else None,
            ),
        )
    )


async def announce(
    uow: UnitOfWork,
    request: ApprovalRequest,
    version: KnownVersion,
    urls: Urls,
    causation_id: str | None,
    supersedes: list[str] | None = None,
) -> None:
    """Publishes ApprovalRequested: everything an approver needs to decide, and how."""
    live = await uow.session.get(LiveVersion, (version.group_name, request.stage))
    approved_by = await uow.session.scalars(
        select(Vote.approver).where(Vote.approval_id == request.id, Vote.decision == "Approved").order_by(Vote.at)
    )
    uow.publish(
        ApprovalRequested(
            producer="approver",
            correlation_id=version.model_version_id,
            causation_id=causation_id,
            payload=ApprovalRequestedPayload(
                group=version.group_name,
                version=version.version,
                model_version_id=version.model_version_id,
                approval_id=request.id,
                stage=request.stage,
                registered_by=version.registered_by,
                artifact_uri=version.artifact_uri,
                artifact_digest=version.artifact_digest,
                artifact_version_id=version.artifact_version_id,
                policy_rule=request.policy_rule,
                required_approvals=request.required_approvals,
                approver_group=request.escalated_to or request.approver_group,
                checks=[MetricCheck.model_validate(c) for c in request.checks],
                metrics=version.metrics,
                live_model_version_id=live.model_version_id if live else None,
                model_card_summary=version.model_card_summary,
                lineage=version.lineage,
                expires_at=request.expires_at,
                decide_url=urls.decide(request.id),
                decide_command=f"modelgate approve {request.id}",
                console_url=urls.console_page(request.id),
                approved_by=list(approved_by),
                escalated=request.escalated_to is not None,
                escalated_from_group=request.approver_group if request.escalated_to else None,
                supersedes=supersedes or [],
            ),
        )
    )


async def _pending_in_stage(
    uow: UnitOfWork, group: str, stage: str, newer_than: int | None = None, older_than: int | None = None
) -> list[ApprovalRequest]:
    query = select(ApprovalRequest).where(
        ApprovalRequest.group_name == group, ApprovalRequest.stage == stage, ApprovalRequest.status == PENDING
    )
    if newer_than is not None:
        query = query.where(ApprovalRequest.version > newer_than).order_by(ApprovalRequest.version.desc())
    if older_than is not None:
        query = query.where(ApprovalRequest.version < older_than).order_by(ApprovalRequest.version)
    return list((await uow.session.scalars(query.with_for_update())).all())


async def _live_version(uow: UnitOfWork, group: str, stage: str) -> KnownVersion | None:
    """The version serving the stage now (from the Deployed events this approver consumed), with its metrics:
    what thresholds relative to live (`>= live + 0.002`) compare with."""
    live = await uow.session.get(LiveVersion, (group, stage))
    return await uow.session.get(KnownVersion, live.model_version_id) if live else None


def _rollout_of(policy: Policy | None, stage: str) -> RolloutSpec | None:
    try:
        return policy.stage(stage).rollout.spec() if policy else None
    except KeyError:
        return None


def _check(check: MetricCheck) -> str:
    return f"{check.metric}={check.value} ({check.op} {check.threshold:g})"


def _failed(failed: list[MetricCheck]) -> str:
    return "thresholds not met: " + ", ".join(
        f"{c.metric}={'missing' if c.value is None else c.value} (needs {c.op} {c.threshold:g}{_relative(c)})" for c in failed
    )


def _relative(check: MetricCheck) -> str:
    return f": {check.rule} with {check.live_model_version_id} at {check.live_value:g}" if check.rule else ""
