"""What a person reads: one short message per event."""

from __future__ import annotations

from shared.events import ApprovalDecided, ApprovalRequested, Deployed, DeploymentFailed, Envelope


def render(event: Envelope) -> str:
    p = event.payload
    if isinstance(event, ApprovalRequested):
        return (
            f"Approval needed: {p.model_version_id} for {p.stage} ({p.policy_rule}). "
            f"Registered by {p.registered_by}; metrics {p.metrics}. "
            f"Decide: {p.decide_command} or POST {p.decide_url}"
        )
    if isinstance(event, ApprovalDecided):
        who = "policy" if p.automatic else ", ".join(p.decided_by)
        why = f" ({p.comment})" if p.comment else ""
        return f"{p.model_version_id} {p.decision.lower()} for {p.stage} by {who}{why}."
    if isinstance(event, Deployed):
        what = "rolled back to" if p.rollback else "deployed"
        before = f", replacing {p.previous_model_version_id}" if p.previous_model_version_id else ""
        return f"{p.model_version_id} {what} in {p.stage} ({p.target}){before}; pointer {p.parameter_name}."
    if isinstance(event, DeploymentFailed):
        return f"Deployment of {p.model_version_id} to {p.stage} FAILED after {p.attempts} attempt(s): {p.reason}"
    return f"{event.event_type} for {event.correlation_id}"
