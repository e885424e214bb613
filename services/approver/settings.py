from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from services.approver.policy import parse_duration
from shared.settings import ServiceSettings

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


class ApproverSettings(ServiceSettings):
    service: str = "approver"
    policy_file: Path = Field(DEFAULT_POLICY, description="The promotion policy (stages and their rules): docs/policy.md.")
    approver_tokens: dict[str, str] = Field(
        default_factory=dict, description='Bootstrap approvers, JSON {"<approver>": "<token>"}, applied at every start.'
    )
    approver_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='JSON {"<approver>": ["<group>", ...]}: which approver groups each is in.'
    )
    console_url: str = Field("", description="The web console's URL in approval requests; default <public_url>/console.")
    hmac_secret_name: str = Field(
        "", description="Secrets Manager secret holding the decision-link key; default <namespace>/approver/hmac-key."
    )
    link_ttl: timedelta = Field(timedelta(hours=24), description="How long a decision link stays valid: 30m, 24h, 2d.")
    expiry_check_seconds: float = Field(30.0, gt=0, description="How often pending requests are checked for expiry.")

    @field_validator("link_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        if not self.console_url:
            self.console_url = f"{self.public_url}/console"
        if not self.hmac_secret_name:
            self.hmac_secret_name = f"{self.namespace}/approver/hmac-key"
