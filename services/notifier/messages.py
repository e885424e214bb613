"""What a person reads: each event rendered from its template in templates.yaml (string.Template).

Chat text (the webhook, Slack's format) is escaped by `chat_text`: `&`, `<` and `>` become `&amp;`, `&lt;`
and `&gt;`, as Slack's formatting rules ask, so what users wrote (registered_by, a model card summary, a
group name, a comment, a failure reason) shows as text: `<!channel>` pings no one, `<http://evil|link>` is no
link. The templates themselves use no Slack control sequences. Email and SNS get the text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from shared.events import (
    ApprovalDecided,
    ApprovalRequested,
    Deployed,
    DeploymentFailed,
    Envelope,
    RolloutPromoted,
    RolloutRolledBack,
    RolloutStepped,
)

TEMPLATES = Path(__file__).with_name("templates.yaml")


@dataclass(frozen=True)
class Message:
    subject: str
    body: str

    @property
    def text(self) -> str:
        """Subject and body in one text, for chat and logs."""
        return f"{self.subject}\n{self.body}"


def chat_text(text: str) -> str:
    """`text` escaped for Slack-style chat: no mentions, links or commands come from the text itself."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def load_templates(path: Path = TEMPLATES) -> dict[str, tuple[Template, Template]]:
    raw = yaml.safe_load(path.read_text())
    return {event_type: (Template(t["subject"]), Template(t["body"].rstrip())) for event_type, t in raw.items()}


_DEFAULT_TEMPLATES = load_templates()


def render(event: Envelope, deployer_url: str = "http://127.0.0.1:8083", templates: dict | None = None) -> Message:
    templates = templates or _DEFAULT_TEMPLATES
    deployer_url = deployer_url.rstrip("/")
    context = {"deployer_url": deployer_url, **_context(event, deployer_url)}
    if event.event_type not in templates:
        return Message(f"{event.event_type} for {event.correlation_id}", event.model_dump_json())
    subject, body = templates[event.event_type]
    return Message(subject.safe_substitute(context), body.safe_substitute(context))


def _context(event: Envelope, deployer_url: str) -> dict[str, Any]:
    p = event.payload
    context: dict[str, Any] = {"group": p.group, "version": p.version, "model_version_id": p.model_version_id}
    if isinstance(event, ApprovalRequested):
        needed = f"{p.required_approvals} approval(s) from {p.approver_group or 'any approver'}"
        if getattr(p, "approved_by", None):
            needed += f", approved so far by {', '.join(p.approved_by)}"
        failed = [f"{c.metric}={c.value} (needs {c.op} {c.threshold})" for c in p.checks if not c.passed]
        context |= {
            "stage": p.stage,
            "policy_rule": p.policy_rule,
            "approvals": needed,
            "registered_by": p.registered_by,
            "metrics": _metrics(p.metrics),
            "checks": f"\nChecks not met: {'; '.join(failed)}." if failed else "",
            "live": p.live_model_version_id or "nothing yet",
            "model_card": f"\nModel card: {p.model_card_summary}" if p.model_card_summary else "",
            "expires": f"\nExpires {p.expires_at:%Y-%m-%d %H:%M} UTC." if p.expires_at else "",
            "decide_command": p.decide_command or f"modelgate approve {p.approval_id}",
            "decide_url": p.decide_url or f"/v1/approvals/{p.approval_id}/decision on the approver",
            "console": f"\n    or open {p.console_url}" if getattr(p, "console_url", None) else "",
        }
    elif isinstance(event, ApprovalDecided):
        approved = p.decision == "Approved"
        context |= {
            "stage": p.stage,
            "decision": p.decision.lower(),
            "decided_by": "policy" if p.automatic else ", ".join(p.decided_by),
            "comment": f" ({p.comment})" if p.comment else "",
            "policy_rule": p.policy_rule,
            "next": f"Next: the deployer deploys it to {p.stage}." if approved
            else "Nothing is deployed. To go further, register an improved version.",
        }
    elif isinstance(event, Deployed):
        context |= {
            "stage": p.stage,
            "what": "Rolled back" if p.rollback else "Deployed",
            "target": p.target,
            "replacing": f", replacing {p.previous_model_version_id}" if p.previous_model_version_id else "",
            "endpoint": p.endpoint_url or "none (the pointer is the deployment)",
            "parameter_name": p.parameter_name,
            "rollback_hint": (
                f"If it misbehaves, put {p.previous_model_version_id} back:\n"
                f"  modelgate rollback {p.group} {p.stage}\n"
                f"  POST {deployer_url}/v1/groups/{p.group}/stages/{p.stage}/rollback"
                if p.previous_model_version_id
                else f"It is the first version live in {p.stage}: there is nothing earlier to roll back to."
            ),
        }
    elif isinstance(event, DeploymentFailed):
        context |= {"stage": p.stage, "target": p.target, "attempts": p.attempts, "reason": p.reason}
    elif isinstance(event, RolloutStepped | RolloutPromoted | RolloutRolledBack):
        context |= _rollout_context(event)
    return context


def _rollout_context(event: RolloutStepped | RolloutPromoted | RolloutRolledBack) -> dict[str, Any]:
    p = event.payload
    context: dict[str, Any] = {}
    context |= {"stage": p.stage, "strategy": p.strategy, "live": p.live_model_version_id or "nothing"}
    if isinstance(event, RolloutStepped):
        share = f"a {p.share:g} % mirror" if p.mirror else f"{p.share:g} %"
        context |= {"status": p.status, "share": share, "step": p.step, "steps": p.steps,
                    "reason": f"\n{p.reason}" if p.reason else ""}
    else:
        evaluation = ", ".join(f"{k}={'n/a' if v is None else f'{v:.4g}'}" for k, v in sorted(p.evaluation.items()))
        context |= {"evaluation": evaluation or "none measured"}
    if isinstance(event, RolloutRolledBack):
        context |= {"status": "aborted" if p.status == "Aborted" else "rolled back", "reason": p.reason,
                    "share": f"{p.share:g} %", "step": p.step}
    return context


def _metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:g}" for name, value in sorted(metrics.items())) or "none reported"
