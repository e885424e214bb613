"""The HTTP side every service shares: the app factory, the dependencies routes take, the health routes.

Routes live in module-level routers, one module per resource (`services/<svc>/routes/<resource>.py`), and get
what they need through `Annotated` dependencies: `SessionDep` (a read session), `UowDep` (a write
transaction the route commits), `RuntimeDep`, and each service's own `<Service>Dep` built on `context_of`.
Every refusal (`shared.errors.Refused`) becomes a JSON answer with its status here, in one place, and is
logged with the principal, the route and the source address.

Every `/v1` route takes `CurrentPrincipal` (tests/unit/test_architecture.py fails a route that does not; the
decision-link routes, whose signed link is the credential, are the listed exceptions). It reads the bearer
credential, throttles failed attempts per source and per principal (429 with Retry-After), and asks the
service's `Authenticator` (shared.identity): 401 without a valid credential, 503 when it cannot verify.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import UnitOfWork
from shared.docs import add_docs
from shared.errors import Refused
from shared.identity import MAX_CREDENTIAL_LENGTH, Principal
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
    app.state.throttle = FailureThrottle(runtime.settings.auth_failure_limit, runtime.settings.auth_failure_window_seconds)
    for router in wiring.routers:
        app.include_router(router)
    app.include_router(health_router)
    add_docs(app)
    app.add_exception_handler(Refused, _refused)  # type: ignore[arg-type]
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
    log.warning("request_refused", status=refused.status, reason=refused.message, method=request.method,
                path=request.url.path, principal=principal.name if principal else None, source=source_address(request))
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    if isinstance(refused, Throttled):
        headers = {"Retry-After": str(refused.retry_after)}
    return JSONResponse({"detail": refused.message}, status_code=refused.status, headers=headers)


def source_address(request: Request) -> str:
    """The caller's address: the first X-Forwarded-For hop when the settings trust the load balancer."""
    runtime = runtime_of(request)
    forwarded = request.headers.get("x-forwarded-for") if runtime.settings.trust_forwarded_headers else None
    if forwarded:
        return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else "unknown"


bearer = HTTPBearer(auto_error=False, description="A modelgate API token, or an OIDC JWT of your identity provider")


async def authenticate(request: Request, credential: str) -> Principal:
    """The principal of `credential`, throttled per source and per principal; refusals raise Refused."""
    throttle: FailureThrottle = request.app.state.throttle
    source = source_address(request)
    throttle.check(f"source:{source}", source)
    authenticator = request.app.state.authenticator
    if authenticator is None:
        raise Refused(503, "this service has no way to verify credentials configured; it refuses every request")
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise Refused(401, "the credential is too long to be a modelgate token or a JWT")
    try:
        principal: Principal = await authenticator.authenticate(credential)
    except Refused as refused:
        if refused.status == 401:
            throttle.failed(f"source:{source}")
        raise
    throttle.check(f"principal:{principal.name}", principal.name)
    request.state.principal = principal
    return principal


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None:
        raise Refused(401, "send 'Authorization: Bearer <token>' (MODELGATE_TOKEN, or var/<namespace>-admin.token "
                           "locally; `modelgate principals add` makes one)")
    return await authenticate(request, credentials.credentials)


def runtime_of(request: Request) -> Runtime[Any]:
    return request.app.state.runtime  # type: ignore[no-any-return]


def context_of(request: Request) -> Any:
    """The service's own object (what its bootstrap built); each service wraps this in a typed dependency."""
    return request.app.state.context


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with runtime_of(request).sessionmaker() as session:
        yield session


async def _uow(request: Request) -> AsyncIterator[UnitOfWork]:
    async with runtime_of(request).uow() as uow:
        yield uow


RuntimeDep = Annotated[Runtime[Any], Depends(runtime_of)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
UowDep = Annotated[UnitOfWork, Depends(_uow)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", summary="The process is alive")
async def healthz(runtime: RuntimeDep) -> dict[str, str]:
    return {"status": "ok", "service": runtime.settings.service}


@health_router.get("/readyz", summary="Database, queue and topic are reachable, and AWS answers in time")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = {"database": await _database_ok(runtime), **{name: ok() for name, ok in runtime.healthy.items()}}
    ready = all(checks.values())
    who = {"service": runtime.settings.service, "namespace": runtime.settings.namespace}
    return JSONResponse({"ready": ready, "checks": checks, **who}, status_code=200 if ready else 503)


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
