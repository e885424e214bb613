"""An inference pipeline served by the `local` target, and a prod stage in another AWS account.

dev: a version registered as two steps (a StandardScaler saved with skops, then an XGBoost model in its own
format) is served by one inference server whose POST /invocations answers what scaler-then-model answers.
prod: its target lives in account 222222222222, reached through a role of that account (STS AssumeRole with
an ExternalId). LocalStack keeps accounts apart by access key (a 12-digit access key id selects that account,
and AssumeRole hands out credentials of the role's account), so the pointer is read back with each account's
key: it is in the prod account's Parameter Store, not in the registry's (000000000000).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
import skops.io
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from shared.infra import boto_client
from shared.topology import bucket_name, parameter_name
from tests.helpers import eventually
from tests.unit.test_deployer_inference import model_bytes

PROD_ACCOUNT, REGISTRY_ACCOUNT = "222222222222", "000000000000"
ROLE = f"modelgate-deployer-{uuid.uuid4().hex[:8]}"
EXTERNAL_ID = f"mg-{uuid.uuid4().hex}"


def in_account(service: str, endpoint: str, account: str):  # type: ignore[no-untyped-def]
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=account,
                        aws_secret_access_key="test")


@pytest.fixture
def prod_role(localstack_endpoint):  # type: ignore[no-untyped-def]
    """The role the prod account trusts the registry's deployer to assume (infra/target-account.yaml's shape)."""
    iam = in_account("iam", localstack_endpoint, PROD_ACCOUNT)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{REGISTRY_ACCOUNT}:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}
    arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    yield arn
    iam.delete_role(RoleName=ROLE)


@pytest.fixture
def system_env(tmp_path, prod_role) -> dict[str, str]:  # type: ignore[no-untyped-def]
    prod = {"target": "parameter-store", "account": PROD_ACCOUNT, "role_arn": prod_role, "external_id": EXTERNAL_ID}
    return {
        "MODELGATE_TARGETS": json.dumps({"dev": "local", "prod": prod}),
        "MODELGATE_LOCAL_RUN_DIR": str(tmp_path / "inference"),
    }


def upload(stack, key: str, body: bytes) -> str:  # type: ignore[no-untyped-def]
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=body)
    return f"s3://{bucket_name(stack.namespace)}/{key}"


def scaler_and_model() -> tuple[StandardScaler, XGBClassifier, np.ndarray]:
    """A scaler and an XGBoost model trained on its output (features of very different scales), and rows to ask."""
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.normal(100, 30, 400), rng.normal(0, 0.01, 400), rng.normal(5, 2, 400)])
    y = ((x[:, 0] - 100) / 30 + (x[:, 1] / 0.01) > 0.3).astype(int)
    scaler = StandardScaler().fit(x)
    model = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=7).fit(scaler.transform(x), y)
    return scaler, model, x[:25]


def ubj(model: XGBClassifier) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ubj"
        model.save_model(path)
        return path.read_bytes()


async def test_a_scaler_then_model_pipeline_is_served_behind_one_invocations_endpoint(system):
    group = f"fraud-pipe-{uuid.uuid4().hex[:6]}"
    scaler, model, rows = scaler_and_model()
    scaler_uri = upload(system, f"{group}/scaler.skops", skops.io.dumps(scaler))
    model_uri = upload(system, f"{group}/model.ubj", ubj(model))
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        body = {"artifact_uri": model_uri, "metrics": {"auc": 0.95}, "framework": "xgboost",
                "containers": [{"name": "scaler", "artifact_uri": scaler_uri}, {"name": "model", "artifact_uri": model_uri}]}
        registered = await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)
        assert registered.status_code == 201, registered.text
        steps = registered.json()["containers"]
        assert [s["name"] for s in steps] == ["scaler", "model"]
        assert all(s["artifact_digest"].startswith("sha256:") for s in steps)  # each step pinned

        async def live() -> dict | None:
            found = (await client.get(f"{system.url('deployer')}/v1/deployments/live", params={"group": group})).json()
            return next((d for d in found if d["stage"] == "dev"), None)

        dev = await eventually(live, timeout=90, interval=0.5)
        assert dev["target"] == "local" and [s["name"] for s in dev["containers"]] == ["scaler", "model"]
        answer = await client.post(f"{dev['endpoint_url']}/invocations", json={"instances": rows.tolist()})
        assert answer.status_code == 200, answer.text
        metadata = (await client.get(f"{dev['endpoint_url']}/metadata")).json()

    expected = model.predict_proba(scaler.transform(rows))
    assert answer.json()["predictions"] == model.predict(scaler.transform(rows)).tolist()
    assert np.allclose(answer.json()["probabilities"], expected, atol=1e-5)
    assert not np.allclose(model.predict_proba(rows), expected, atol=1e-3)  # the scaler step matters
    assert [s["name"] for s in metadata["steps"]] == ["scaler", "model"]


async def test_prod_in_another_account_gets_its_pointer_there_and_not_in_the_registry_account(system):
    group = f"fraud-acct-{uuid.uuid4().hex[:6]}"
    artifact = upload(system, f"{group}/model.skops", model_bytes())  # dev serves it on the local target first
    name = parameter_name(group, "prod")
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        registered = await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions",
                                       json={"artifact_uri": artifact, "metrics": {"auc": 0.95}})
        assert registered.status_code == 201, registered.text

        async def pending(stage: str) -> list:
            found = (await client.get(f"{system.url('approver')}/v1/approvals", params={"status": "pending"})).json()
            return [a for a in found if a["model_version_id"] == f"{group}/1" and a["stage"] == stage]

        async def decide(stage: str, *approvers: str) -> None:
            approval = (await eventually(lambda: pending(stage), timeout=60, interval=0.3))[0]
            for who in approvers:
                decided = await client.post(f"{system.url('approver')}/v1/approvals/{approval['approval_id']}/decision",
                                            json={"decision": "approve", "comment": "ok"}, headers=system.headers(who))
                assert decided.status_code == 200, decided.text

        await decide("test", "lee")
        await decide("prod", "kim", "raj")

        async def live_prod() -> dict | None:
            found = (await client.get(f"{system.url('deployer')}/v1/deployments/live", params={"group": group})).json()
            return next((d for d in found if d["stage"] == "prod"), None)

        prod = await eventually(live_prod, timeout=60, interval=0.5)
        assert prod["account"] == PROD_ACCOUNT
        test = next(d for d in (await client.get(f"{system.url('deployer')}/v1/deployments",
                                                 params={"group": group, "stage": "test"})).json())
        assert test["account"] is None  # the deployer's own account

        async def deployed_events() -> list:
            history = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/1/history")).json()
            items = history["items"] if isinstance(history, dict) else history
            return [e for e in items if e.get("event_type") == "Deployed" and e.get("payload", {}).get("stage") == "prod"]

        deployed = (await eventually(deployed_events, timeout=30, interval=0.5))[0]
        assert deployed["payload"]["account"] == PROD_ACCOUNT

        drift = (await client.get(f"{system.url('deployer')}/v1/drift", params={"group": group, "stage": "prod"})).json()
        [stage] = drift["stages"]
        pointer = next(v for v in stage["views"] if v["source"] == "pointer")
        assert not stage["drifted"] and pointer["model_version_id"] == f"{group}/1" and PROD_ACCOUNT in pointer["detail"]

    prod_ssm = in_account("ssm", system.endpoint, PROD_ACCOUNT)
    try:
        value = json.loads(prod_ssm.get_parameter(Name=name)["Parameter"]["Value"])
        assert value["model_version_id"] == f"{group}/1" and value["account"] == PROD_ACCOUNT
        registry_ssm = in_account("ssm", system.endpoint, REGISTRY_ACCOUNT)
        with pytest.raises(registry_ssm.exceptions.ParameterNotFound):
            registry_ssm.get_parameter(Name=name)
        registry_ssm.get_parameter(Name=parameter_name(group, "test"))  # test stays in the registry's account
    finally:
        prod_ssm.delete_parameter(Name=name)
