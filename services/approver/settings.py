from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


class ApproverSettings(ServiceSettings):
    service: str = "approver"
    policy_file: Path = Field(DEFAULT_POLICY, description="The promotion policy (stages and their rules).")
    approver_tokens: dict[str, str] = Field(
        default_factory=dict, description='JSON {"<approver>": "<token>"}: who may decide, and their API token.'
    )
    approver_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='JSON {"<approver>": ["<group>", ...]}: which approver groups each is in.'
    )
