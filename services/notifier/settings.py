from pydantic import Field

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    service: str = "notifier"
    webhook_url: str | None = Field(None, description="A Slack-compatible incoming webhook; unset: log only.")
    webhook_timeout_seconds: float = 5.0
