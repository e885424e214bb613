"""The whole journey with the four services running as real processes on LocalStack."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx

from modelgate import stack as stack_mod
from shared.infra import boto_client
from shared.topology import SERVICES, bucket_name, parameter_name
from tests.helpers import eventually


def upload_artifact(stack, key: str) -> str:
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=b"model bytes")
    return f"s3://{bucket_name(stack.namespace)}/{key}"


async def register(client: httpx.AsyncClient, stack, group: str, artifact: str, auc: float = 0.93, by: str = "ana") -> dict:
    response = await client.post(
        f"{stack.url('registrar')}/v1/groups/{group}/versions",
        json={"artifact_uri": artifact, "registered_by": by, "metrics": {"auc": auc}},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def stage_status(client: httpx.AsyncClient, stack, group: str, version: int, stage: str) -> str | None:
    record = (await client.get(f"{stack.url('registrar')}/v1/groups/{group}/versions/{version}")).json()
    return record["stages"].get(stage)


async def test_twenty_concurrent_versions_all_reach_dev_each_deployed_and_announced_once(system, webhook):
    # Twenty models (one group each), so no approval supersedes another: within one group, the newer
    # version wins a stage and older concurrent approvals are recorded as superseded (tests/e2e/test_deploy_*).
    artifact = upload_artifact(system, "fraud/model.bin")
    groups = [f"fraud-{n:02d}" for n in range(20)]
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        registered = await asyncio.gather(*(register(client, system, group, artifact) for group in groups))
        assert {r["model_version_id"] for r in registered} == {f"{group}/1" for group in groups}

        async def all_deployed():
            statuses = await asyncio.gather(*(stage_status(client, system, group, 1, "dev") for group in groups))
            return all(s == "Deployed" for s in statuses)

        await eventually(all_deployed, timeout=90, interval=0.5)
        deployments = (await client.get(f"{system.url('deployer')}/v1/deployments")).json()
        deployed = Counter(d["model_version_id"] for d in deployments if d["status"] == "Deployed")
        assert deployed == {f"{group}/1": 1 for group in groups}

        async def all_announced():  # decided, deployed, test approval requested: three per version
            return len(webhook.posts) >= 60

        await eventually(all_announced, timeout=30)
        await asyncio.sleep(1)  # nothing more should arrive
        assert len(webhook.posts) == 60
        assert len({p["event_id"] for p in webhook.posts}) == 60
        history = (await client.get(f"{system.url('registrar')}/v1/groups/fraud-07/versions/1/history")).json()
        assert [e["event_type"] for e in history] == [
            "ModelRegistered", "ApprovalDecided", "DeploymentStarted", "Deployed", "ApprovalRequested"]
        assert {e["payload"]["model_version_id"] for e in history} == {"fraud-07/1"}

    ssm = boto_client("ssm", system.endpoint)
    for group in groups:
        pointer = json.loads(ssm.get_parameter(Name=parameter_name(group, "dev"))["Parameter"]["Value"])
        assert pointer["model_version_id"] == f"{group}/1" and pointer["artifact_uri"] == artifact


async def test_a_person_approves_test_over_http_and_it_deploys(system):
    artifact = upload_artifact(system, "churn/model.bin")
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        version = await register(client, system, "churn", artifact, by="ana")

        async def pending_test_approval():
            pending = (await client.get(f"{system.url('approver')}/v1/approvals", params={"status": "pending"})).json()
            return [a for a in pending if a["model_version_id"] == version["model_version_id"] and a["stage"] == "test"]

        approval = (await eventually(pending_test_approval, timeout=30))[0]
        decide = f"{system.url('approver')}/v1/approvals/{approval['approval_id']}/decision"
        refused = await client.post(decide, json={"decision": "approve"}, headers=system.headers("ana"))
        assert refused.status_code == 403 and "cannot approve" in refused.json()["detail"]
        anonymous = await client.post(decide, json={"decision": "approve"}, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        ok = await client.post(decide, json={"decision": "approve", "comment": "lgtm"}, headers=system.headers("lee"))
        assert ok.status_code == 200, ok.text

        async def deployed_to_test():
            return await stage_status(client, system, "churn", version["version"], "test") == "Deployed"

        await eventually(deployed_to_test, timeout=30)


def test_sigterm_stops_every_service_promptly_and_cleanly(system):
    for service in SERVICES:
        started = time.monotonic()
        assert stack_mod.stop_service(system, service, timeout=30)
        assert time.monotonic() - started < 30
        assert '"service_stopped"' in system.logfile(service).read_text()
