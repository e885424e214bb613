"""Routing: which events go to which audiences, and the audiences' addresses per channel (routing.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.events import Envelope

Channel = Literal["log", "webhook", "email", "sns"]
APPROVERS = "approvers"  # in routes: the stage's approver group
EventType = Literal["ApprovalRequested", "ApprovalDecided", "Deployed", "DeploymentFailed", "RolloutStepped", "RolloutPromoted",
                    "RolloutRolledBack"]
ROUTED = frozenset(get_args(EventType))  # what people are told of; webhook subscriptions may get more


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: list[str] = Field(default_factory=list)
    webhook: str | None = None
    sns: bool = False


@dataclass(frozen=True)
class Recipient:
    """One address on one channel, and the audiences it stands for."""

    channel: Channel
    address: str
    audiences: tuple[str, ...]


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audiences: dict[str, Audience] = Field(default_factory=dict)
    routes: dict[EventType, list[str]] = Field(default_factory=dict)

    def recipients(self, event: Envelope, default_webhook: str | None) -> tuple[list[Recipient], list[str]]:
        """Who gets `event` (one Recipient per channel and address), and the audiences routing does not know."""
        found: dict[tuple[str, str], list[str]] = {}
        unknown: list[str] = []
        for name in self.audience_names(event):
            audience = self.audiences.get(name)
            if audience is None:
                unknown.append(name)
                continue
            addresses: list[tuple[str, str | None]] = [("email", a) for a in audience.email]
            addresses.append(("webhook", default_webhook if audience.webhook == "default" else audience.webhook))
            addresses.append(("sns", "topic" if audience.sns else None))
            for channel, address in addresses:
                if address:
                    found.setdefault((channel, address), []).append(name)
        recipients = [Recipient("log", "log", tuple(self.audience_names(event)))]
        recipients += [Recipient(c, a, tuple(names)) for (c, a), names in found.items()]  # type: ignore[arg-type]
        return recipients, unknown

    def audience_names(self, event: Envelope) -> list[str]:
        names = []
        for name in self.routes.get(event.event_type, []):  # type: ignore[call-overload]
            if name == APPROVERS:
                name = getattr(event.payload, "approver_group", None) or ""
            if name and name not in names:
                names.append(name)
        return names


def load_routing(path: Path) -> Routing:
    return Routing.model_validate(yaml.safe_load(path.read_text()) or {})
