"""dev on the `local` target: a real inference server answers predictions; a rollback brings back the
previous version's answers. Four services as processes on LocalStack, models in its S3."""

from __future__ import annotations

import hashlib
import json
import signal
import uuid

import httpx
import pytest

from modelgate import stack as stack_mod
from shared.infra import boto_client
from shared.topology import bucket_name, parameter_name
from tests.helpers import eventually
from tests.unit.test_deployer_inference import model_bytes

ROW = {"instances": [[3.0, 0.0, 0.0]]}  # version 1 says fraud (1), version 2 was trained the other way round


@pytest.fixture
def system_env(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "MODELGATE_TARGETS": json.dumps({"dev": "local"}),
        "MODELGATE_LOCAL_RUN_DIR": str(tmp_path / "inference"),
        "MODELGATE_LEASE_SECONDS": "3",  # how soon a restarted deployer takes over a stage a killed one held
    }


def upload(stack, key: str, body: bytes) -> str:  # type: ignore[no-untyped-def]
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=body)
    return f"s3://{bucket_name(stack.namespace)}/{key}"


async def live_in_dev(client: httpx.AsyncClient, stack, group: str) -> dict | None:  # type: ignore[no-untyped-def]
    live = (await client.get(f"{stack.url('deployer')}/v1/deployments/live", params={"group": group})).json()
    return next((d for d in live if d["stage"] == "dev"), None)


async def test_dev_on_the_local_target_answers_predictions_and_rollback_restores_the_previous_answers(system):
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    first, second = upload(system, f"{group}/1.skops", model_bytes()), upload(system, f"{group}/2.skops", model_bytes(flip=True))
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:

        async def register(artifact: str) -> dict:
            body = {"artifact_uri": artifact, "metrics": {"auc": 0.93}, "framework": "sklearn"}
            response = await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)
            assert response.status_code == 201, response.text
            return response.json()

        async def serving(version: int) -> dict | None:
            live = await live_in_dev(client, system, group)
            return live if live and live["version"] == version else None

        async def predict(url: str) -> int:
            response = await client.post(f"{url}/invocations", json=ROW)
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]

        registered = await register(first)
        assert registered["artifact_digest"] == "sha256:" + hashlib.sha256(model_bytes()).hexdigest()  # pinned
        v1 = await eventually(lambda: serving(1), timeout=90, interval=0.5)
        assert v1["target"] == "local" and await predict(v1["endpoint_url"]) == 1
        pointer = json.loads(boto_client("ssm", system.endpoint).get_parameter(Name=parameter_name(group, "dev"))["Parameter"]["Value"])
        assert pointer["model_version_id"] == f"{group}/1" and pointer["endpoint_url"] == v1["endpoint_url"]
        assert (pointer["artifact_digest"], pointer["artifact_version_id"]) == (
            registered["artifact_digest"], registered["artifact_version_id"])

        await register(second)
        v2 = await eventually(lambda: serving(2), timeout=90, interval=0.5)
        assert v2["endpoint_url"] != v1["endpoint_url"] and await predict(v2["endpoint_url"]) == 0
        assert v2["previous_model_version_id"] == f"{group}/1"

        async def old_server_stopped() -> bool:
            try:
                await client.get(f"{v1['endpoint_url']}/healthz", timeout=2)
            except httpx.HTTPError:
                return True
            return False

        await eventually(old_server_stopped, timeout=30)

        rollback_url = f"{system.url('deployer')}/v1/groups/{group}/stages/dev/rollback"
        reason = {"reason": "v2 flags every payment"}
        not_operator = await client.post(rollback_url, json=reason)  # ana registers; she does not operate
        assert not_operator.status_code == 403 and "operator" in not_operator.json()["detail"]
        anonymous = await client.post(rollback_url, json=reason, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        someone_else = await client.post(rollback_url, json={**reason, "requested_by": "kim"}, headers=system.headers("lee"))
        assert someone_else.status_code == 403 and "not you" in someone_else.json()["detail"]
        assert (await live_in_dev(client, system, group))["version"] == 2  # none of those changed anything
        upload(system, f"{group}/1.joblib", model_bytes(flip=True))  # overwritten since approval: the bucket keeps v1's bytes
        accepted = await client.post(rollback_url, json=reason, headers=system.headers("lee"))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["model_version_id"] == f"{group}/1" and accepted.json()["rollback"] is True
        back = await eventually(lambda: serving(1), timeout=90, interval=0.5)
        assert back["rollback"] is True and back["requested_by"] == "lee" and await predict(back["endpoint_url"]) == 1  # approved bytes

        refused = await client.post(rollback_url, json={"requested_by": "lee"}, headers=system.headers("lee"))
        assert refused.status_code == 409 and "no earlier" in refused.json()["detail"]
        unknown = await client.post(f"{system.url('deployer')}/v1/groups/{group}/stages/prod/rollback", headers=system.headers("lee"))
        assert unknown.status_code == 404

        async def rollback_announced() -> list:
            history = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/1/history")).json()
            return [e for e in history if e["event_type"] == "Deployed" and e["payload"]["rollback"]]

        (announced,) = await eventually(rollback_announced, timeout=30)
        assert announced["payload"]["previous_model_version_id"] == f"{group}/2"
        audit = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert [(d["version"], d["status"], d["rollback"], d["live"]) for d in audit] == [
            (1, "Deployed", False, False), (2, "Deployed", False, False), (1, "Deployed", True, True)
        ]


async def test_a_deployer_killed_mid_deployment_finishes_it_once_after_restart(system):
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    artifact = upload(system, f"{group}/1.skops", model_bytes())
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        body = {"artifact_uri": artifact, "metrics": {"auc": 0.93}}
        assert (await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)).status_code == 201

        async def deploying() -> bool:
            rows = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
            return any(d["status"] == "Deploying" for d in rows)

        await eventually(deploying, timeout=60, interval=0.02)  # its inference server is starting now
        stack_mod.stop_service(system, "deployer", sig=signal.SIGKILL)
        stack_mod.start_service(system, "deployer")
        stack_mod.wait_ready(system, "deployer")

        async def live() -> dict | None:
            return await live_in_dev(client, system, group)

        served = await eventually(live, timeout=90, interval=0.5)
        answer = await client.post(f"{served['endpoint_url']}/invocations", json=ROW)
        assert answer.json()["predictions"] == [1]

        async def announced() -> list:
            history = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/1/history")).json()
            return [e for e in history if e["event_type"] == "Deployed"]

        assert len(await eventually(announced, timeout=30)) == 1
        rows = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert [(d["status"], d["live"]) for d in rows] == [("Deployed", True)]
