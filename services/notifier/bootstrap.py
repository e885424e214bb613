"""The notifier's composition root: its channels, its handler and its delivery worker, built once."""

from __future__ import annotations

from datetime import timedelta

import httpx
import structlog

from services.notifier import notify as handlers
from services.notifier.channels import Channel, EmailChannel, LogChannel, SnsChannel, WebhookChannel
from services.notifier.notify import Notifier
from services.notifier.routes import deliveries, webhooks
from services.notifier.routing import Routing, load_routing
from services.notifier.settings import NotifierSettings
from services.notifier.worker import DeliveryWorker
from shared.identity import Authenticator, closer, introspecting
from shared.runtime import Runtime, Wiring, stop_all
from shared.secrets import service_key
from shared.topology import notifications_topic_name
from shared.wiring import inject

log = structlog.get_logger()

HANDLERS = {
    "ApprovalRequested": handlers.notify,
    "ApprovalDecided": handlers.notify,
    "Deployed": handlers.notify,
    "DeploymentFailed": handlers.notify,
    "RolloutStepped": handlers.notify,
    "RolloutPromoted": handlers.notify,
    "RolloutRolledBack": handlers.notify,
    # for webhook subscriptions alone: routing tells people of the seven above
    "ModelRegistered": handlers.notify,
    "DeploymentStarted": handlers.notify,
    "DeploymentSuperseded": handlers.notify,
}


async def bootstrap(runtime: Runtime[NotifierSettings], authenticator: Authenticator | None = None) -> Wiring:
    """The notifier's wiring; `authenticator` defaults to asking the approver (shared.identity)."""
    settings = runtime.settings
    authenticator = authenticator or introspecting(settings, await service_key(runtime))
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds)
    routing = load_routing(settings.routing_file)
    notifier = Notifier(
        routing,
        build_channels(runtime, routing, http),
        default_webhook=settings.webhook_url,
        deployer_url=settings.deployer_url,
        attempts=settings.delivery_attempts,
        retry_seconds=settings.delivery_retry_seconds,
        webhook_schedule=tuple(timedelta(seconds=s) for s in settings.webhook_retry_seconds),
        webhook_allow_private=settings.webhook_allow_private,
    )
    return Wiring(
        handlers=inject(HANDLERS, notifier=notifier),
        routers=[deliveries.router, webhooks.router],
        workers=[DeliveryWorker(notifier, runtime.uow, http=http)],
        context=notifier,
        title="modelgate notifier",
        description="Notifications and their delivery log.",
        authenticator=authenticator,
        on_stop=stop_all(http.aclose, closer(authenticator)),
    )


def build_channels(runtime: Runtime[NotifierSettings], routing: Routing, http: httpx.AsyncClient) -> dict[str, Channel]:
    """The log and the webhook always; email with a sender; the notifications topic unless turned off."""
    settings = runtime.settings
    channels: dict[str, Channel] = {"log": LogChannel(), "webhook": WebhookChannel(http)}
    if settings.email_sender:
        channels["email"] = EmailChannel(runtime.aws["ses"], settings.email_sender)
    elif any(a.email for a in routing.audiences.values()):
        log.warning("email_not_sent", reason="routing names email addresses but MODELGATE_EMAIL_SENDER is unset")
    events_topic = getattr(runtime.publisher, "topic_arn", None)  # None on the in-memory bus of tests
    if settings.sns_notifications and events_topic:
        # Beside the events topic, in the same account and region.
        arn = events_topic.rsplit(":", 1)[0] + ":" + notifications_topic_name(settings.namespace)
        channels["sns"] = SnsChannel(runtime.aws["sns"], arn)
    return channels
