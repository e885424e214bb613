"""The audit trail: every request, vote, decision, expiry, escalation, supersession and refusal, appended.

Each entry says who (actor), when (at), what (action, decision), why (reason) and under which policy rule.
The CSV export is safe to open in a spreadsheet: a cell that starts with = + - @, a tab or a carriage return
(a comment `=HYPERLINK(...)`) is written with a leading single quote, so it is text, never a formula (OWASP).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
    offset: int = 0,
    after_id: int | None = None,
) -> list[AuditOut]:
    """Matching entries, oldest first: `limit` of them, from `offset` or after the entry `after_id`."""
    query = select(AuditEntry).order_by(AuditEntry.id).limit(limit).offset(offset)
    if after_id is not None:
        query = query.where(AuditEntry.id > after_id)
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


#: Entries read at a time while exporting: the export holds this many in memory, however long the trail.
EXPORT_BATCH = 1000


async def every_entry(sessionmaker: async_sessionmaker[AsyncSession], **filters: Any) -> AsyncIterator[list[AuditOut]]:
    """Every matching entry, oldest first, in batches of EXPORT_BATCH, each read in its own short session
    (keyset on id, so entries appended meanwhile come at the end and none is read twice)."""
    after: int | None = None
    while True:
        async with sessionmaker() as session:
            batch = await entries(session, **filters, limit=EXPORT_BATCH, after_id=after)
        if batch:
            yield batch
        if len(batch) < EXPORT_BATCH:
            return
        after = batch[-1].id


async def csv_export(sessionmaker: async_sessionmaker[AsyncSession], **filters: Any) -> AsyncIterator[str]:
    """The whole trail as CSV, a batch at a time: the header, then every matching entry."""
    first = True
    async for batch in every_entry(sessionmaker, **filters):
        text = to_csv(batch)
        yield text if first else text.split("\n", 1)[1]
        first = False
    if first:
        yield to_csv([])


async def json_export(sessionmaker: async_sessionmaker[AsyncSession], **filters: Any) -> AsyncIterator[str]:
    """The whole trail as one JSON list, a batch at a time."""
    yield "["
    first = True
    async for batch in every_entry(sessionmaker, **filters):
        for row in batch:
            yield ("" if first else ",") + row.model_dump_json()
            first = False
    yield "]"


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
