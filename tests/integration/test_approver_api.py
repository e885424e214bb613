"""The approver's HTTP API on SQLite and PostgreSQL: authenticated decisions, every refusal, decision links,
the audit export, and what the CLI and the console read."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from services.approver.links import LinkSigner
from services.approver.models import Credential
from shared.events import utcnow
from shared.identity import token_digest
from tests.integration.test_approver_harness import PEPPER, TOKENS, Approver, bearer

ANONYMOUS = {"Authorization": ""}


@pytest.fixture
async def approver(database_url):
    approver = await Approver.start(database_url)
    yield approver
    await approver.close()


@pytest.fixture
async def api(approver):
    """The approver's API, read as its admin unless a request sends its own credential."""
    async with approver.http() as client:
        client.headers.update(bearer("admin"))
        yield client


async def pending_request(approver: Approver, stage: str = "test", version: int = 1) -> str:
    """The approval id of fraud/<version>'s pending request for `stage` (registered by ana)."""
    await approver.register("fraud", version)
    await approver.deployed("fraud", version, "dev")
    if stage == "prod":
        await approver.vote((await approver.request(f"fraud/{version}", "test")).id, "lee")
        await approver.deployed("fraud", version, "test")
    return (await approver.request(f"fraud/{version}", stage)).id


def decision(client, approval_id: str, who: str | None, verdict: str = "approve", comment: str | None = None, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else (bearer(who) if who else ANONYMOUS)
    return client.post(f"/v1/approvals/{approval_id}/decision", json={"decision": verdict, "comment": comment}, headers=headers)


async def test_an_approver_decides_over_http_and_the_list_shows_what_they_need(approver, api):
    approval_id = await pending_request(approver)
    [listed] = (await api.get("/v1/approvals", params={"status": "pending"})).json()
    assert listed["approval_id"] == approval_id and listed["stage"] == "test"
    assert listed["checks"] == [{"metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.93, "passed": True,
                                  "rule": None, "live_value": None, "live_model_version_id": None}]
    assert listed["eligible_groups"] == ["ml-leads"] and listed["registered_by"] == "ana"
    assert listed["decide_command"] == f"modelgate approve {approval_id}"
    assert listed["live_model_version_id"] is None
    assert listed["lineage"]["experiment"] == "exp-1" and listed["model_card_summary"]

    response = await decision(api, approval_id, "lee", comment="ok")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "Approved" and body["approved_by"] == ["lee"]
    assert [(v["approver"], v["decision"], v["comment"], v["via"]) for v in body["votes"]] == [("lee", "Approved", "ok", "token")]
    assert (await api.get("/v1/approvals", params={"status": "pending"})).json() == []
    decided = (await api.get("/v1/approvals", params={"status": "decided", "stage": "test"})).json()
    assert [a["approval_id"] for a in decided] == [approval_id]
    assert (await api.get(f"/v1/approvals/{approval_id}")).json()["status"] == "Approved"


@pytest.mark.parametrize(
    "who, token, verdict, comment, status, detail",
    [
        (None, None, "approve", None, 401, "send 'Authorization: Bearer <token>'"),
        (None, "not-a-token", "approve", None, 401, "unknown token"),
        ("kim", None, "approve", None, 403, "kim is not in approver group 'ml-leads', which decides test"),
        ("ana", None, "approve", None, 403, "ana registered fraud/1 and cannot approve it"),
        ("ana", None, "reject", "mine", 403, "ana registered fraud/1 and cannot approve it"),
        ("lee", None, "reject", None, 422, "a rejection needs a comment saying why"),
    ],
)
async def test_decisions_are_refused_with_a_clear_reason(approver, api, who, token, verdict, comment, status, detail):
    approval_id = await pending_request(approver)
    with capture_logs() as logs:
        response = await decision(api, approval_id, who, verdict, comment, token)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert (await api.get(f"/v1/approvals/{approval_id}")).json()["status"] == "pending"
    refusals = [entry for entry in logs if entry["event"] in ("decision_refused", "request_refused") and entry["status"] != 429]
    refusals = refusals[:1] if status == 401 else [r for r in refusals if r["event"] == "decision_refused"]
    assert len(refusals) == 1 and detail in refusals[0]["reason"]
    assert all(secret not in json.dumps(logs, default=str) for secret in [*TOKENS.values(), "not-a-token"])


async def test_refusals_of_known_approvers_are_in_the_audit_trail(approver, api):
    approval_id = await pending_request(approver)
    await decision(api, approval_id, "kim")
    await decision(api, approval_id, "ana")
    refused = [e for e in await approver.audit(approval_id=approval_id) if e.action == "refused"]
    assert [(e.actor, e.details["status"]) for e in refused] == [("kim", 403), ("ana", 403)]
    assert "cannot approve" in refused[1].reason


async def test_a_disabled_principal_and_a_revoked_token_are_refused(approver, api):
    approval_id = await pending_request(approver)
    assert (await api.patch("/v1/principals/lee", json={"disabled": True})).status_code == 200
    response = await decision(api, approval_id, "lee")
    assert response.status_code == 401 and "lee is disabled" in response.json()["detail"]
    assert (await api.patch("/v1/principals/lee", json={"disabled": False})).status_code == 200
    assert (await decision(api, approval_id, "lee")).status_code == 401, "disabling revoked lee's tokens for good"
    fresh = (await api.post("/v1/principals/lee/tokens")).json()
    assert (await decision(api, approval_id, None, token=fresh["token"])).status_code == 200
    [audit_entry] = [e for e in await approver.audit() if e.action == "principal_disabled"]
    assert audit_entry.actor == "admin"


async def test_conflicting_decisions_get_409(approver, api):
    approval_id = await pending_request(approver, "prod")
    assert (await decision(api, approval_id, "kim")).json()["status"] == "pending"
    again = await decision(api, approval_id, "kim")
    assert again.status_code == 409 and "already voted" in again.json()["detail"]
    assert (await decision(api, approval_id, "raj", "reject", "not calibrated")).json()["status"] == "Rejected"
    late = await decision(api, approval_id, "ana", "reject", "also no")
    assert late.status_code == 409 and "already Rejected" in late.json()["detail"]
    missing = await decision(api, "no-such-request", "lee")
    assert missing.status_code == 404


async def test_tokens_are_stored_as_digests_only(approver):
    async with approver.sessionmaker() as session:
        rows = (await session.scalars(select(Credential))).all()
    stored = json.dumps([[r.id, r.principal, r.digest] for r in rows])
    assert {r.principal for r in rows} == set(TOKENS)
    assert all(token not in stored for token in TOKENS.values())
    assert all(r.digest == token_digest(PEPPER, TOKENS[r.principal]) for r in rows)


async def link_for(api, approval_id: str, who: str) -> str:
    response = await api.post(f"/v1/approvals/{approval_id}/decision-links", headers=bearer(who))
    assert response.status_code == 201, response.text
    assert response.json()["approver"] == who
    return response.json()["url"].removeprefix("http://approver.test")


async def test_a_decision_link_decides_once_and_a_replay_is_refused(approver, api):
    approval_id = await pending_request(approver, "prod")
    url = await link_for(api, approval_id, "kim")
    page = await api.get(url, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "fraud/1 → prod" in page.text and "Approve" in page.text
    info = (await api.get(url)).json()
    assert (info["approver"], info["used"], info["approval"]["stage"]) == ("kim", False, "prod")

    first = await api.post(url, json={"decision": "approve"})
    assert first.status_code == 200 and first.json()["votes"][0]["via"] == "link"
    with capture_logs() as logs:
        replay = await api.post(url, json={"decision": "approve"})
    assert replay.status_code == 401 and "already used" in replay.json()["detail"]
    assert (await api.get(url)).json()["used"] is True
    assert "token" not in json.dumps(logs, default=str).replace('"via": "token"', "")
    assert [e.action for e in await approver.audit(approval_id=approval_id)][-1] == "refused"


async def test_forged_altered_expired_and_misdirected_links_are_refused(approver, api):
    approval_id = await pending_request(approver, "prod")
    other_id = await pending_request(approver, "test", version=2)
    url = await link_for(api, approval_id, "kim")
    token = url.split("token=")[1]
    body, signature = token.split(".")
    forged, _ = LinkSigner(b"x" * 32).issue(approval_id, "kim", timedelta(hours=1))
    altered_claims = approver.signer.issue(approval_id, "raj", timedelta(hours=1))[0].split(".")[0] + "." + signature
    expired, _ = approver.signer.issue(approval_id, "kim", timedelta(hours=1), now=utcnow() - timedelta(hours=2))
    ana, _ = approver.signer.issue(approval_id, "ana", timedelta(hours=1))
    lee, _ = approver.signer.issue(approval_id, "lee", timedelta(hours=1))
    ghost, _ = approver.signer.issue(approval_id, "ghost", timedelta(hours=1))
    cases = [
        (approval_id, forged, 401, "not valid"),
        (approval_id, altered_claims, 401, "not valid"),
        (approval_id, body, 401, "not valid"),
        (approval_id, "garbage", 401, "not valid"),
        (approval_id, expired, 401, "expired at"),
        (other_id, token, 401, "for another approval request"),
        (approval_id, ghost, 401, "ghost is unknown or disabled"),
        (approval_id, lee, 403, "lee is not in approver group 'model-risk'"),
        (approval_id, ana, 403, "ana registered fraud/1 and cannot approve it"),
    ]
    for target, link_token, status, detail in cases:
        for method in ("GET", "POST") if status == 401 else ("POST",):
            response = await api.request(
                method, f"/v1/approvals/{target}/decision-link", params={"token": link_token}, json={"decision": "approve"}
            )
            assert (response.status_code, detail in response.json()["detail"]) == (status, True), (link_token, response.text)
    assert (await api.get(f"/v1/approvals/{approval_id}")).json()["votes"] == []
    assert (await api.post(url, json={"decision": "approve"})).status_code == 200  # the genuine link still works, once


async def test_the_audit_trail_exports_as_json_and_csv_per_version_and_time_range(approver, api):
    before = utcnow()
    approval_id = await pending_request(approver)
    await pending_request(approver, version=2)
    await decision(api, approval_id, "lee", comment="ok")
    as_json = (await api.get("/v1/audit", params={"model_version_id": "fraud/1"})).json()
    assert [(e["action"], e["stage"]) for e in as_json] == [
        ("requested", "dev"), ("decided", "dev"), ("requested", "test"), ("vote", "test"), ("decided", "test"),
    ]
    response = await api.get("/v1/audit", params={"model_version_id": "fraud/1", "format": "csv", "since": before.isoformat()})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["action"] for r in rows] == [e["action"] for e in as_json]
    assert rows[3]["actor"] == "lee" and rows[3]["reason"] == "ok" and json.loads(rows[3]["details"])["via"] == "token"
    assert (await api.get("/v1/audit", params={"until": before.isoformat()})).json() == [
        e for e in (await api.get("/v1/audit")).json() if e["action"] in ("principal_added", "token_issued")
    ]
    assert len((await api.get("/v1/audit", params={"group": "fraud"})).json()) == 5 + 3
    naive = await api.get("/v1/audit", params={"since": "2025-01-01T00:00:00"})
    assert naive.status_code == 422 and "timezone" in naive.text
    backwards = await api.get("/v1/audit", params={"since": utcnow().isoformat(), "until": before.isoformat()})
    assert backwards.status_code == 422 and "since must be before until" in backwards.text


async def test_what_the_cli_and_the_console_read(approver, api):
    prod_id = await pending_request(approver, "prod")
    me = await api.get("/v1/me", headers=bearer("kim"))
    assert me.json() == {"name": "kim", "kind": "person", "roles": ["viewer"], "teams": [], "groups": ["model-risk"], "via": "token"}
    assert (await api.get("/v1/me", headers=ANONYMOUS)).status_code == 401
    assert [a["approval_id"] for a in (await api.get("/v1/approvals", params={"approver": "kim"})).json()] == [prod_id]
    assert (await api.get("/v1/approvals", params={"approver": "ana"})).json() == []  # her own version
    assert (await api.get("/v1/approvals", params={"approver": "lee"})).json() == []  # not model-risk
    assert (await api.get("/v1/approvals", params={"approver": "nobody"})).json() == []  # tells nobody who exists
    assert [a["stage"] for a in (await api.get("/v1/approvals", params={"status": "all", "model_version_id": "fraud/1"})).json()] == [
        "dev", "test", "prod",
    ]
    stages = (await api.get("/v1/policy")).json()
    assert [(s["name"], s["approval"], s["approvers"], s["group"]) for s in stages] == [
        ("dev", "automatic", None, None), ("test", "manual", 1, "ml-leads"), ("prod", "manual", 2, "model-risk"),
    ]
    assert stages[2]["expires_after"] == "3d" and stages[2]["escalate_to"] == "risk-committee" and stages[2]["supersede"]
    assert (await api.get("/v1/approvals/nope")).status_code == 404
