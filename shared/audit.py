"""The request audit of every service: each change asked of its API and each refusal, with the principal,
the action (method and route), the target (path), the source address and the outcome.

Promises:
- Every POST, PUT, PATCH or DELETE under `/v1` or `/console`, and every answer 401, 403 or 429 of any
  method, is appended to the service's own `request_audit` table once the answer is known (a failure to
  write it is logged, never turned into a different answer).
- Reading it (`GET /v1/audit/requests`) needs the auditor role; it pages, newest last, at most 1,000 rows.
What each change did is in the owning service's own record (the catalog's history, the approver's audit
trail, the deployments); this table says who asked, from where, and whether they were let.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import RequestAudit
from shared.http import CurrentPrincipal, SessionDep, runtime_of, source_address
from shared.identity import Role
from shared.limits import PageLimit, PageOffset, one_page

log = structlog.get_logger()
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
REFUSALS = {401, 403, 429}


class AuditedRequests:
    """ASGI middleware: appends a RequestAudit row for each change and each refusal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            if _audited(scope, status):
                await _append(Request(scope), status)


def _audited(scope: Scope, status: int) -> bool:
    path = scope.get("path", "")
    return status in REFUSALS or (scope.get("method") in CHANGES and path.startswith(("/v1/", "/console/")))


async def _append(request: Request, status: int) -> None:
    principal = getattr(request.state, "principal", None)
    outcome = "refused" if status in REFUSALS else ("done" if status < 400 else "failed")
    try:
        async with runtime_of(request).uow() as uow:
            uow.session.add(RequestAudit(
                principal=principal.name if principal else None, method=request.method, path=request.url.path[:500],
                source=source_address(request), status=status, outcome=outcome,
                reason=getattr(request.state, "refusal", None),
            ))
            await uow.commit()
    except Exception as exc:  # the answer is given already: say so in the log, do not change it
        log.error("request_audit_not_written", error=repr(exc), path=request.url.path, status=status)


class RequestAuditOut(BaseModel):
    id: int
    at: datetime
    principal: str | None
    method: str
    path: str
    source: str
    status: int
    outcome: str
    reason: str | None


router = APIRouter(tags=["audit"])


@router.get("/v1/audit/requests", response_model=list[RequestAuditOut],
            summary="Who asked this service for what, from where, and the outcome (auditor)")
async def audited_requests(
    response: Response,
    session: SessionDep,
    caller: CurrentPrincipal,
    principal: str | None = Query(None, max_length=100),
    outcome: Literal["done", "refused", "failed"] | None = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> list[Any]:
    caller.require(Role.AUDITOR, to="read the request audit")
    query = select(RequestAudit).order_by(RequestAudit.id).limit(limit + 1).offset(offset)
    for column, wanted in ((RequestAudit.principal, principal), (RequestAudit.outcome, outcome)):
        if wanted is not None:
            query = query.where(column == wanted)
    if since is not None:
        query = query.where(RequestAudit.at >= since)
    rows = one_page(list(await session.scalars(query)), limit, offset, response)
    return [RequestAuditOut.model_validate(row, from_attributes=True) for row in rows]
