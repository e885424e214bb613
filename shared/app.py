"""The app factory every service shares: its routers, the health routes, the API docs from the package,
security headers on every answer, request bodies capped (shared/limits.py), the request audit (shared/audit.py), and refusals mapped to HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import audit
from shared.docs import add_docs
from shared.errors import Refused
from shared.http import CurrentPrincipal, RuntimeDep, source_address
from shared.identity import Principal, Role
from shared.limits import BodyLimit
from shared.outbox import count_set_aside, set_aside_rows
from shared.runtime import Runtime, Wiring
from shared.throttle import FailureThrottle, Throttled

log = structlog.get_logger()


def build_app(runtime: Runtime[Any], wiring: Wiring) -> FastAPI:
    """The service's FastAPI app: its routers, the health routes, and refusals mapped to HTTP."""
    app = FastAPI(title=wiring.title or f"modelgate {runtime.settings.service}", version="0.1.0",
                  description=wiring.description, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.context = wiring.context
    app.state.authenticator = wiring.authenticator
    app.state.service_key = wiring.service_key
    app.state.throttle = FailureThrottle(runtime.settings.auth_failure_limit, runtime.settings.auth_failure_window_seconds)
    for router in wiring.routers:
        app.include_router(router)
    app.include_router(health_router)
    app.include_router(audit.router)
    app.include_router(outbox_router)
    add_docs(app)
    app.add_exception_handler(Refused, _refused)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit)  # innermost: its 413 is audited and gets the security headers
    app.add_middleware(audit.AuditedRequests)
    app.add_middleware(SecurityHeaders)
    return app


#: On every answer of every service: only this origin's scripts (no inline script, no CDN), no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response (a route's own value wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refused(request: Request, refused: Refused) -> JSONResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    if refused.status == 403 and principal is not None:
        request.app.state.throttle.failed(f"principal:{principal.name}")
    request.state.refusal = refused.message
    log.warning("request_refused", status=refused.status, reason=refused.message, method=request.method,
                path=request.url.path, principal=principal.name if principal else None, source=source_address(request))
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    if isinstance(refused, Throttled):
        headers = {"Retry-After": str(refused.retry_after)}
    return JSONResponse({"detail": refused.message}, status_code=refused.status, headers=headers)


health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", summary="The process is alive")
async def healthz(runtime: RuntimeDep) -> dict[str, str]:
    return {"status": "ok", "service": runtime.settings.service}


@health_router.get("/readyz", summary="Database, queue and topic are reachable, and AWS answers in time")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready (200) or not (503). Outbox rows the bus refused for good make it `degraded` with their count,
    still ready: everything else flows, and restarting would not change them (`modelgate dlq list`)."""
    checks = {"database": await _database_ok(runtime), **{name: ok() for name, ok in runtime.healthy.items()}}
    ready = all(checks.values())
    who = {"service": runtime.settings.service, "namespace": runtime.settings.namespace}
    answer: dict[str, Any] = {"ready": ready, "checks": checks, **who}
    if checks["database"] and (set_aside := await _set_aside(runtime)):
        answer |= {"degraded": True, "outbox_set_aside": set_aside,
                   "hint": f"{set_aside} event(s) the bus refused for good; see them with 'modelgate dlq list'"}
    return JSONResponse(answer, status_code=200 if ready else 503)


async def _set_aside(runtime: Runtime[Any]) -> int:
    try:
        return await count_set_aside(runtime.sessionmaker)
    except SQLAlchemyError:  # an older schema: nothing set aside
        return 0


class SetAsideOut(BaseModel):
    event_id: str
    event_type: str
    created_at: datetime
    set_aside_at: datetime
    reason: str
    bytes: int


outbox_router = APIRouter(tags=["outbox"])


@outbox_router.get("/v1/outbox/set-aside", response_model=list[SetAsideOut],
                   summary="Events this service could not publish, set aside with the reason (operator)")
async def set_aside(
    runtime: RuntimeDep, caller: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[SetAsideOut]:
    caller.require(Role.AUDITOR, to="read the events set aside from the outbox")
    return [SetAsideOut(event_id=r.event_id, event_type=r.event_type, created_at=r.created_at,
                        set_aside_at=r.set_aside_at, reason=r.set_aside_reason or "", bytes=len(r.body.encode()))
            for r in await set_aside_rows(runtime.sessionmaker, limit) if r.set_aside_at is not None]


@health_router.get("/metrics", summary="Prometheus metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _database_ok(runtime: Runtime[Any]) -> bool:
    try:
        async with runtime.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
