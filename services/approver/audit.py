"""The audit trail: every request, vote, decision, expiry, escalation, supersession and refusal, appended.

Each entry says who (actor), when (at), what (action, decision), why (reason) and under which policy rule.
The CSV export is safe to open in a spreadsheet: a cell that starts with = + - @, a tab or a carriage return
(a comment `=HYPERLINK(...)`) is written with a leading single quote, so it is text, never a formula (OWASP).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.approver.models import ApprovalRequest, AuditEntry
from shared.db import UnitOfWork

POLICY = "policy"  # the actor when the policy itself acted (thresholds, expiry, supersession)


class AuditOut(BaseModel):
    id: int
    at: datetime
    action: str
    actor: str
    model_version_id: str | None
    stage: str | None
    approval_id: str | None
    decision: str | None
    reason: str | None
    policy_rule: str | None
    details: dict[str, Any]


FIELDS = list(AuditOut.model_fields)


def record(
    uow: UnitOfWork,
    action: str,
    actor: str,
    request: ApprovalRequest | None = None,
    *,
    decision: str | None = None,
    reason: str | None = None,
    model_version_id: str | None = None,
    **details: Any,
) -> None:
    """Appends one entry; `details` are any further facts worth keeping (JSON)."""
    uow.session.add(
        AuditEntry(
            action=action,
            actor=actor,
            model_version_id=request.model_version_id if request else model_version_id,
            stage=request.stage if request else None,
            approval_id=request.id if request else None,
            decision=decision,
            reason=reason,
            policy_rule=request.policy_rule if request else None,
            details=details,
        )
    )


async def entries(
    session: AsyncSession,
    *,
    model_version_id: str | None = None,
    group: str | None = None,
    approval_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> list[AuditOut]:
    query = select(AuditEntry).order_by(AuditEntry.id).limit(limit)
    if model_version_id:
        query = query.where(AuditEntry.model_version_id == model_version_id)
    if group:
        query = query.where(AuditEntry.model_version_id.startswith(f"{group}/", autoescape=True))
    if approval_id:
        query = query.where(AuditEntry.approval_id == approval_id)
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    return [AuditOut.model_validate(row, from_attributes=True) for row in await session.scalars(query)]


#: What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as a CSV cell no spreadsheet runs: text starting like a formula gets a leading single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def to_csv(rows: list[AuditOut]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows:
        data = row.model_dump(mode="json")
        data["details"] = json.dumps(row.details, sort_keys=True)
        writer.writerow({name: safe_cell(value) for name, value in data.items()})
    return out.getvalue()
