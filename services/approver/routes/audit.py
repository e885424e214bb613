"""The audit trail, oldest first, as JSON or CSV: every matching entry, streamed as it is read (a batch at a
time, so memory stays small however long the trail)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from services.approver import audit
from shared.http import CurrentPrincipal, RuntimeDep
from shared.identity import Role
from shared.limits import Name

router = APIRouter(tags=["audit"])


@router.get(
    "/v1/audit",
    response_model=list[audit.AuditOut],
    summary="The audit trail, oldest first, as JSON or CSV",
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_audit(
    runtime: RuntimeDep,
    caller: CurrentPrincipal,
    model_version_id: Name | None = Query(None, description='"<group>/<version>"'),
    group: Name | None = Query(None),
    approval_id: Name | None = Query(None),
    since: Annotated[AwareDatetime | None, Query(description="From this instant (inclusive), e.g. 2025-01-31T00:00:00Z")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Up to this instant (exclusive)")] = None,
    format: Literal["json", "csv"] = Query("json"),
) -> Any:
    caller.require(Role.AUDITOR, to="read the audit trail")
    if since and until and since >= until:
        raise HTTPException(422, "since must be before until")
    filters = {"model_version_id": model_version_id, "group": group, "approval_id": approval_id, "since": since, "until": until}
    if format == "csv":
        return StreamingResponse(audit.csv_export(runtime.sessionmaker, **filters), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
    return StreamingResponse(audit.json_export(runtime.sessionmaker, **filters), media_type="application/json")
