from functools import partial

import httpx
import structlog

from services.notifier.api import build_api
from services.notifier.channels import Channel, EmailChannel, LogChannel, SnsChannel, WebhookChannel
from services.notifier.notify import Notifier, notify
from services.notifier.routing import load_routing
from services.notifier.settings import NotifierSettings
from shared.service import Runtime, ServiceSpec
from shared.topology import CONSUMES, notifications_topic_name

log = structlog.get_logger()


def spec(settings: NotifierSettings) -> ServiceSpec:
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds)
    routing = load_routing(settings.routing_file)

    def handlers(runtime: Runtime):  # type: ignore[no-untyped-def]
        channels: dict[str, Channel] = {"log": LogChannel(), "webhook": WebhookChannel(http)}
        if settings.email_sender:
            channels["email"] = EmailChannel(runtime.aws["ses"], settings.email_sender)
        elif any(a.email for a in routing.audiences.values()):
            log.warning("email_not_sent", reason="routing names email addresses but MODELGATE_EMAIL_SENDER is unset")
        if settings.sns_notifications:
            # Beside the events topic, in the same account and region.
            arn = runtime.publisher.topic_arn.rsplit(":", 1)[0] + ":" + notifications_topic_name(settings.namespace)
            channels["sns"] = SnsChannel(runtime.aws["sns"], arn)
        notifier = Notifier(
            routing,
            channels,
            default_webhook=settings.webhook_url,
            deployer_url=settings.deployer_url,
            attempts=settings.delivery_attempts,
            retry_seconds=settings.delivery_retry_seconds,
        )
        handler = partial(notify, notifier=notifier)
        return {event_type: handler for event_type in CONSUMES["notifier"]}

    async def close(runtime: Runtime) -> None:
        await http.aclose()

    return ServiceSpec(
        name="notifier",
        build_handlers=handlers,
        build_api=build_api,
        aws_services=("ses",) if settings.email_sender else (),
        on_stop=close,
    )
