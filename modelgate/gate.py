"""The deployment gate: whether a version may go to a stage, and why (or why not) in one sentence.

One rule for the SDK's `gate()` and `modelgate gate`; its codes are the CLI's exit codes (docs/cli.md)."""

from __future__ import annotations

from modelgate.models import GateCode, GateVerdict, Version

GATE_OPEN = ("Approved", "Deploying", "Deployed")  # approved for the stage; Deploying: not serving yet


def verdict(record: Version, stage: str) -> GateVerdict:
    code, reason = _why(record, stage)
    return GateVerdict(model_version_id=record.model_version_id, stage=stage, status=record.status(stage),
                       code=code, reason=reason)


def _why(record: Version, stage: str) -> tuple[GateCode, str]:
    details = record.stage_details.get(stage) or {}
    status = record.status(stage)
    vid = record.model_version_id
    if status in GATE_OPEN:
        who = ", ".join(details.get("decided_by") or [])
        note = f" (approved by {who})" if who else ""
        if status == "Deploying":
            return GateCode.OPEN, f"{vid} is approved for {stage}{note}; its deployment there is under way, not serving yet"
        return GateCode.OPEN, f"{vid} is {status} for {stage}{note}"
    if status is None:
        reached = ", ".join(f"{s}={st}" for s, st in record.stages.items()) or "no stage yet"
        return GateCode.NOT_REQUESTED, f"{vid} has not been put up for {stage} yet ({reached})"
    if status == "PendingApproval":
        return GateCode.PENDING, f"{vid} is waiting for approval for {stage}; see 'modelgate approvals --stage {stage}'"
    if status == "Rejected":
        who = ", ".join(details.get("decided_by") or [])
        return GateCode.REJECTED, f"{vid} was rejected for {stage}" + (f" by {who}" if who else "")
    if status == "Superseded":
        newer = details.get("superseded_by") or "a newer version"
        return GateCode.SUPERSEDED, f"{vid} was superseded for {stage} by {newer}: it will never serve {stage}"
    if status == "Retired":
        newer = details.get("replaced_by") or "a newer version"
        return GateCode.RETIRED, f"{vid} served {stage} until {newer} replaced it; gate {newer} instead"
    if status == "RolledBack":
        replaced = details.get("replaced_by", "an earlier version")
        return GateCode.REJECTED, f"{vid} was rolled back from {stage} to {replaced}"
    if status == "DeploymentFailed":
        reason = details.get("reason", "see modelgate show")
        return GateCode.DEPLOYMENT_FAILED, f"{vid} was approved for {stage} but its deployment failed: {reason}"
    return GateCode.PENDING, f"{vid} is {status} for {stage}, not approved"
