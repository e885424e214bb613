"""A version's whole journey through the default policy, with the four services running on LocalStack:
dev approved automatically, test by one approver, prod by two distinct approvers (one of them through a
decision link), with every refusal along the way, the audit trail and no secret in the logs."""

from __future__ import annotations

import csv
import io
import json

import httpx

from shared.infra import boto_client
from shared.topology import SERVICES, bucket_name, parameter_name
from tests.helpers import eventually

ANONYMOUS = {"Authorization": ""}


async def test_dev_automatic_then_test_by_one_approver_then_prod_by_two_distinct_approvers(system):
    s3 = boto_client("s3", system.endpoint)
    s3.put_object(Bucket=bucket_name(system.namespace), Key="credit/model.bin", Body=b"model bytes")
    approver, registrar = system.url("approver"), system.url("registrar")
    auth = system.headers
    async with httpx.AsyncClient(timeout=30, headers=auth("ana")) as client:
        registered = await client.post(
            f"{registrar}/v1/groups/credit/versions",
            json={
                "artifact_uri": f"s3://{bucket_name(system.namespace)}/credit/model.bin",
                "metrics": {"auc": 0.91},
                "model_card": {"summary": "Credit default model."},
            },
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["registered_by"] == "ana"  # the caller, not a name in the body
        mvid, version = registered.json()["model_version_id"], registered.json()["version"]

        async def registrar_shows(stage: str, status: str) -> bool:
            record = (await client.get(f"{registrar}/v1/groups/credit/versions/{version}")).json()
            return record["stages"].get(stage) == status

        async def pending(stage: str) -> dict | None:
            listed = (await client.get(f"{approver}/v1/approvals", params={"status": "pending", "model_version_id": mvid})).json()
            return next((a for a in listed if a["stage"] == stage), None)

        # dev: automatic on auc >= 0.8, then deployed; test is asked for with what an approver needs
        test = await eventually(lambda: pending("test"), timeout=60)
        await eventually(lambda: registrar_shows("dev", "Deployed"), timeout=30)
        assert test["checks"] == [{"metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.91, "passed": True,
                                   "rule": None, "live_value": None, "live_model_version_id": None}]
        assert test["live_model_version_id"] is None and test["decide_command"] == f"modelgate approve {test['approval_id']}"

        # test: one approver of ml-leads; the registrant cannot approve her own version
        decide_test = f"{approver}/v1/approvals/{test['approval_id']}/decision"
        own = await client.post(decide_test, json={"decision": "approve"}, headers=auth("ana"))
        assert own.status_code == 403 and "cannot approve" in own.json()["detail"]
        assert (await client.post(decide_test, json={"decision": "approve"}, headers=auth("lee"))).json()["status"] == "Approved"

        # prod: two distinct approvers of model-risk
        prod = await eventually(lambda: pending("prod"), timeout=60)
        await eventually(lambda: registrar_shows("test", "Deployed"), timeout=30)
        assert prod["required_approvals"] == 2 and prod["eligible_groups"] == ["model-risk"]
        decide_prod = f"{approver}/v1/approvals/{prod['approval_id']}/decision"
        refusals = {
            "anonymous": await client.post(decide_prod, json={"decision": "approve"}, headers=ANONYMOUS),
            "forged token": await client.post(decide_prod, json={"decision": "approve"}, headers={"Authorization": "Bearer x"}),
            "outside the group": await client.post(decide_prod, json={"decision": "approve"}, headers=auth("lee")),
            "registrant": await client.post(decide_prod, json={"decision": "approve"}, headers=auth("ana")),
        }
        assert {why: r.status_code for why, r in refusals.items()} == {
            "anonymous": 401, "forged token": 401, "outside the group": 403, "registrant": 403,
        }
        first = await client.post(decide_prod, json={"decision": "approve", "comment": "risk ok"}, headers=auth("kim"))
        assert first.json()["status"] == "pending" and first.json()["approved_by"] == ["kim"]
        assert (await client.post(decide_prod, json={"decision": "approve"}, headers=auth("kim"))).status_code == 409
        await eventually(lambda: registrar_shows("prod", "PendingApproval"), timeout=30)

        # the second approver decides through a signed, single-use decision link
        link = (await client.post(f"{approver}/v1/approvals/{prod['approval_id']}/decision-links", headers=auth("raj"))).json()
        page = await client.get(link["url"], headers={"Accept": "text/html", **ANONYMOUS})  # the link is the credential
        assert page.status_code == 200 and f"{mvid} → prod" in page.text
        approved = await client.post(link["url"], json={"decision": "approve", "comment": "second pair of eyes"}, headers=ANONYMOUS)
        assert approved.json()["status"] == "Approved" and approved.json()["approved_by"] == ["kim", "raj"]
        replay = await client.post(link["url"], json={"decision": "approve"}, headers=ANONYMOUS)
        assert replay.status_code == 401 and "already used" in replay.json()["detail"]

        await eventually(lambda: registrar_shows("prod", "Deployed"), timeout=60)
        pointer = boto_client("ssm", system.endpoint).get_parameter(Name=parameter_name("credit", "prod"))["Parameter"]["Value"]
        assert json.loads(pointer)["model_version_id"] == mvid

        # the audit trail, as a regulator would export it: an auditor's (here the admin's) read, not an approver's
        audit_query = {"model_version_id": mvid, "format": "csv"}
        assert (await client.get(f"{approver}/v1/audit", params=audit_query, headers=auth("kim"))).status_code == 403
        assert (await client.get(f"{approver}/v1/audit", params=audit_query, headers=ANONYMOUS)).status_code == 401
        exported = await client.get(f"{approver}/v1/audit", params=audit_query, headers=auth("admin"))
        assert exported.status_code == 200, exported.text
        trail = [(r["action"], r["stage"], r["actor"]) for r in csv.DictReader(io.StringIO(exported.text))]
        assert trail == [
            ("requested", "dev", "policy"), ("decided", "dev", "policy"),
            ("requested", "test", "policy"), ("refused", "test", "ana"), ("vote", "test", "lee"), ("decided", "test", "lee"),
            ("requested", "prod", "policy"), ("refused", "prod", "lee"), ("refused", "prod", "ana"),
            ("vote", "prod", "kim"), ("vote", "prod", "raj"), ("decided", "prod", "kim, raj"), ("refused", "prod", "raj"),
        ]

    key = boto_client("secretsmanager", system.endpoint).get_secret_value(SecretId=f"{system.namespace}/approver/hmac-key")
    link_token = link["url"].split("token=")[1]
    for service in SERVICES:
        log = system.logfile(service).read_text()
        assert all(secret not in log for secret in [*system.tokens.values(), key["SecretString"], link_token]), service
