"""The HTTP dependencies every service's routes take (the app itself is built by shared/app.py).

Routes live in module-level routers, one module per resource (`services/<svc>/routes/<resource>.py`), and get
what they need through `Annotated` dependencies: `SessionDep` (a read session), `UowDep` (a write
transaction the route commits), `RuntimeDep`, and each service's own `<Service>Dep` built on `context_of`.
Routes raise `shared.errors.Refused`; shared/app.py turns it into the JSON answer and logs it.

Every `/v1` route takes `CurrentPrincipal` (tests/unit/test_architecture.py fails a route that does not; the
decision-link routes, whose signed link is the credential, are the listed exceptions). It reads the bearer
credential, throttles failed attempts per source and per principal (429 with Retry-After), and asks the
service's `Authenticator` (shared.identity): 401 without a valid credential, 503 when it cannot verify.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import UnitOfWork
from shared.errors import Refused
from shared.identity import CLIENT_HEADER, MAX_CREDENTIAL_LENGTH, SERVICE_KEY_HEADER, Principal
from shared.runtime import Runtime
from shared.throttle import FailureThrottle

log = structlog.get_logger()


def source_address(request: Request) -> str:
    """The caller's address. Behind a load balancer the settings trust, the last X-Forwarded-For hop: the one
    the balancer appended (earlier hops are whatever the client sent, so they cannot be trusted)."""
    runtime = runtime_of(request)
    key = getattr(request.app.state, "service_key", None)
    presented = request.headers.get(SERVICE_KEY_HEADER)
    if key and presented and hmac.compare_digest(presented.encode(), key.encode()):  # a sibling, for its caller
        return request.headers.get(CLIENT_HEADER, "unknown")[:64]
    forwarded = request.headers.get("x-forwarded-for") if runtime.settings.trust_forwarded_headers else None
    if forwarded:
        return forwarded.split(",")[-1].strip()[:64]
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
        principal: Principal = await authenticator.authenticate(credential, source)
    except Refused as refused:
        if refused.status == 401:
            throttle.failed(f"source:{source}")
        raise
    throttle.check(f"principal:{principal.name}", principal.name, runtime_of(request).settings.auth_principal_failure_limit)
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
