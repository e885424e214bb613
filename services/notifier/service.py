from functools import partial

import httpx

from services.notifier.api import build_api
from services.notifier.notify import notify
from services.notifier.settings import NotifierSettings
from shared.service import Runtime, ServiceSpec
from shared.topology import CONSUMES


def spec(settings: NotifierSettings) -> ServiceSpec:
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds)

    def handlers(runtime: Runtime):  # type: ignore[no-untyped-def]
        handler = partial(notify, http=http, webhook_url=settings.webhook_url)
        return {event_type: handler for event_type in CONSUMES["notifier"]}

    async def close(runtime: Runtime) -> None:
        await http.aclose()

    return ServiceSpec(name="notifier", build_handlers=handlers, build_api=build_api, on_stop=close)
