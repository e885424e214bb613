"""The whole journey with real principals, the four services as real processes on LocalStack: a CI pipeline
registers with its OIDC JWT (a service account bound to the JWT's subject, no modelgate token), dev is
approved by policy, test by one approver, prod by two distinct approvers, one of them an SSO user known
only to the identity provider. The identity provider is tests/oidc_provider.py's LocalIdP (a real JWKS over
HTTP on 127.0.0.1), standing in for the organisation's, which tests cannot reach."""

from __future__ import annotations

import json

import httpx
import pytest

from shared.infra import boto_client
from shared.topology import bucket_name, parameter_name
from tests.helpers import eventually
from tests.oidc_provider import LocalIdP

CI_SUBJECT = "repo:acme/credit:ref:refs/heads/main"


@pytest.fixture(scope="module")
def idp():
    with LocalIdP() as provider:
        yield provider


@pytest.fixture
def system_env(idp):
    return {"MODELGATE_OIDC_ISSUER": idp.issuer, "MODELGATE_OIDC_JWKS_URL": idp.jwks_url}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_ci_pipeline_registers_with_its_jwt_and_prod_is_approved_by_a_person_and_an_sso_user(system, idp):
    approver, registrar = system.url("approver"), system.url("registrar")
    async with httpx.AsyncClient(timeout=30) as client:
        bound = await client.post(f"{approver}/v1/principals", headers=system.headers("admin"), json={
            "name": "ci-credit", "kind": "service", "roles": ["registrant"], "teams": ["ml"],
            "oidc_subject": CI_SUBJECT, "token": False})
        assert bound.status_code == 201, bound.text
        ci, sam = bearer(idp.issue(CI_SUBJECT)), bearer(idp.issue("sam", groups=["model-risk"]))

        key = "credit-oidc/model.bin"
        boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
        artifact = f"s3://{bucket_name(system.namespace)}/{key}"
        spoofed = await client.post(f"{registrar}/v1/groups/credit-oidc/versions", headers=ci,
                                    json={"artifact_uri": artifact, "registered_by": "kim", "metrics": {"auc": 0.92}})
        assert spoofed.status_code == 403 and "is not you (ci-credit)" in spoofed.json()["detail"]
        registered = await client.post(f"{registrar}/v1/groups/credit-oidc/versions", headers=ci,
                                       json={"artifact_uri": artifact, "metrics": {"auc": 0.92}})
        assert registered.status_code == 201 and registered.json()["registered_by"] == "ci-credit"
        mvid = registered.json()["model_version_id"]

        async def pending(stage: str) -> dict | None:
            listed = (await client.get(f"{approver}/v1/approvals", headers=system.headers("lee"),
                                       params={"status": "pending", "model_version_id": mvid})).json()
            return next((a for a in listed if a["stage"] == stage), None)

        async def stage_is(stage: str, status: str) -> bool:
            record = (await client.get(f"{registrar}/v1/groups/credit-oidc/versions/1", headers=ci)).json()
            return record["stages"].get(stage) == status

        async def decide(request: dict, headers: dict) -> httpx.Response:
            return await client.post(f"{approver}/v1/approvals/{request['approval_id']}/decision", headers=headers,
                                     json={"decision": "approve", "comment": "holds on the holdout"})

        test = await eventually(lambda: pending("test"), timeout=60)  # dev: the policy approved it
        assert (await decide(test, ci)).status_code == 403  # a registrant's own version, and no approver group
        assert (await decide(test, system.headers("lee"))).json()["status"] == "Approved"
        await eventually(lambda: stage_is("test", "Deployed"), timeout=60)

        prod = await eventually(lambda: pending("prod"), timeout=60)
        assert (await decide(prod, sam)).json()["approved_by"] == ["sam"]
        again = await decide(prod, bearer(idp.issue("sam", groups=["model-risk"])))  # a fresh JWT: still sam
        assert again.status_code == 409 and "already voted" in again.json()["detail"]
        assert (await decide(prod, system.headers("kim"))).json()["status"] == "Approved"
        await eventually(lambda: stage_is("prod", "Deployed"), timeout=60)

        audit = (await client.get(f"{approver}/v1/audit", headers=system.headers("admin"),
                                  params={"model_version_id": mvid})).json()
        votes = [(e["stage"], e["actor"]) for e in audit if e["action"] == "vote"]
        assert votes == [("test", "lee"), ("prod", "sam"), ("prod", "kim")]
        history = (await client.get(f"{registrar}/v1/groups/credit-oidc/versions/1/history", headers=ci)).json()
        assert history[0]["payload"]["registered_by"] == "ci-credit"
    pointer = json.loads(boto_client("ssm", system.endpoint).get_parameter(Name=parameter_name("credit-oidc", "prod"))["Parameter"]["Value"])
    assert pointer["model_version_id"] == mvid
