from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from services.approver.policy import parse_duration
from shared.settings import REPO_ROOT, ServiceSettings

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


class ApproverSettings(ServiceSettings):
    service: str = "approver"
    policy_file: Path = Field(DEFAULT_POLICY, description="The promotion policy (stages and their rules): docs/policy.md.")
    admin_token_file: str = Field(
        "", description="Where the first start writes the admin principal's token (0600); default var/<namespace>-admin.token. 'none': nowhere."
    )
    admin_token_secret_name: str = Field(
        "", description="On AWS: the Secrets Manager secret the first start writes the admin token to (instead of a file)."
    )
    token_pepper_secret_name: str = Field(
        "", description="Secrets Manager secret with the pepper of token digests; default <namespace>/approver/token-pepper."
    )
    sagemaker_bridge: bool = Field(
        False, description="The registrar's SageMaker bridge is on: ensure its service principal, sagemaker-bridge "
        "(no roles, no token), so the name its registrations carry is a service's, never a person's.")
    token_ttl: timedelta = Field(timedelta(days=90), description="How long a new API token is valid: 30d, 12h (0: no expiry).")
    session_ttl: timedelta = Field(timedelta(hours=12), description="How long a console sign-in lasts.")
    oidc_issuer: str = Field("", description="The identity provider's issuer (iss); empty: OIDC JWTs are not accepted.")
    oidc_audience: str = Field("modelgate", description="The audience (aud) JWTs must be issued for.")
    oidc_jwks_url: str = Field("", description="The identity provider's JWKS URL; default <issuer>/.well-known/jwks.json.")
    oidc_name_claim: str = Field("preferred_username", description="The claim naming the person (falls back to sub).")
    oidc_groups_claim: str = Field("groups", description="The claim listing the person's groups (= approver groups).")
    oidc_default_roles: list[str] = Field(["viewer"], description="Roles every SSO user has.")
    oidc_group_roles: dict[str, list[str]] = Field(default_factory=dict, description='JSON {"<idp group>": ["registrant", ...]}.')
    oidc_group_teams: dict[str, list[str]] = Field(default_factory=dict, description='JSON {"<idp group>": ["<team>", ...]}.')
    console_url: str = Field("", description="The web console's URL in approval requests; default <public_url>/console.")
    hmac_secret_name: str = Field(
        "", description="Secrets Manager secret holding the decision-link key; default <namespace>/approver/hmac-key."
    )
    link_ttl: timedelta = Field(timedelta(hours=24), description="How long a decision link stays valid: 30m, 24h, 2d.")
    expiry_check_seconds: float = Field(30.0, gt=0, description="How often pending requests are checked for expiry.")

    @field_validator("link_ttl", "token_ttl", "session_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        if not self.console_url:
            self.console_url = f"{self.public_url}/console"
        if not self.admin_token_file:
            self.admin_token_file = str(REPO_ROOT / "var" / f"{self.namespace}-admin.token")
        if not self.token_pepper_secret_name:
            self.token_pepper_secret_name = f"{self.namespace}/approver/token-pepper"
        if self.oidc_issuer and not self.oidc_jwks_url:
            self.oidc_jwks_url = f"{self.oidc_issuer.rstrip('/')}/.well-known/jwks.json"
        if not self.hmac_secret_name:
            self.hmac_secret_name = f"{self.namespace}/approver/hmac-key"
