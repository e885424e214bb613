from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings

DEFAULT_ROUTING = Path(__file__).with_name("routing.yaml")


class NotifierSettings(ServiceSettings):
    service: str = "notifier"
    routing_file: Path = Field(DEFAULT_ROUTING, description="Who is told what, on which channel (see routing.yaml).")
    webhook_url: str | None = Field(None, description='The Slack-compatible incoming webhook that routing calls "default".')
    webhook_timeout_seconds: float = 5.0
    email_sender: str | None = Field(None, description="A verified SES identity to send from; unset: no email.")
    sns_notifications: bool = Field(True, description="Publish to the <namespace>-notifications topic when routing says so.")
    delivery_attempts: int = Field(4, ge=1, description="Tries of one delivery before it is recorded as failed.")
    delivery_retry_seconds: float = Field(0.5, ge=0, description="Wait before the second try; doubles after each.")
    webhook_retry_seconds: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000],
        description="Waits before a webhook subscription's 2nd, 3rd, ... attempt (a day in all); then it fails.",
    )
    webhook_allow_private: bool = Field(
        False, description="Development only: let subscriptions use http and loopback, private or link-local hosts.",
    )
    deployer_url: str = Field("http://127.0.0.1:8083", description="The deployer's URL, quoted in messages (rollback).")
