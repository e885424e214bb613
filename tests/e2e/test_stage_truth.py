"""The catalog tells the truth about what serves where: with the four services as real processes on LocalStack,
many versions of one group at once, a promotion, a second wave and a rollback each settle with every version
in an end state and exactly one Deployed per (group, stage): the one Parameter Store names."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx

from shared.infra import boto_client
from shared.topology import bucket_name, dlq_name, parameter_name
from tests.helpers import eventually

END = {"Deployed", "Superseded", "Retired", "RolledBack", "DeploymentFailed", "Rejected"}


def upload_artifact(stack, key: str) -> str:
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=b"model bytes")
    return f"s3://{bucket_name(stack.namespace)}/{key}"


def pointer(stack, group: str, stage: str) -> str:
    value = boto_client("ssm", stack.endpoint).get_parameter(Name=parameter_name(group, stage))["Parameter"]["Value"]
    return json.loads(value)["model_version_id"]


async def register_many(client: httpx.AsyncClient, stack, group: str, artifact: str, count: int) -> None:
    async def one() -> None:
        response = await client.post(f"{stack.url('registrar')}/v1/groups/{group}/versions",
                                     json={"artifact_uri": artifact, "metrics": {"auc": 0.95}})
        assert response.status_code == 201, response.text

    await asyncio.gather(*(one() for _ in range(count)))


async def settled(client: httpx.AsyncClient, stack, group: str, stage: str, versions: set[int],
                  timeout: float = 60) -> dict[int, dict]:
    """Waits until every one of `versions` is in an end state for `stage` and the pointer names the one Deployed;
    at no moment do two versions read Deployed there. Returns version -> its stage details."""

    async def check() -> dict[int, dict] | None:
        rows = (await client.get(f"{stack.url('registrar')}/v1/groups/{group}/versions")).json()
        details = {r["version"]: r["stage_details"].get(stage, {}) for r in rows if r["version"] in versions}
        deployed = [f"{group}/{n}" for n, d in details.items() if d.get("status") == "Deployed"]
        assert len(deployed) <= 1, f"two versions read Deployed in {stage} at once: {deployed}"
        if len(details) < len(versions) or any(d.get("status") not in END for d in details.values()):
            return None
        return details if deployed and deployed == [pointer(stack, group, stage)] else None

    return await eventually(check, timeout=timeout, interval=0.5)


def only_deployed(details: dict[int, dict]) -> int:
    (number,) = [n for n, d in details.items() if d["status"] == "Deployed"]
    return number


async def test_fifty_versions_at_once_a_promotion_a_second_wave_and_a_rollback_each_leave_one_deployed(system):
    group = "surge"
    artifact = upload_artifact(system, "surge/model.bin")
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        started = time.monotonic()
        await register_many(client, system, group, artifact, 50)
        wave = await settled(client, system, group, "dev", set(range(1, 51)))
        first = only_deployed(wave)
        print(f"50 at once settled in {time.monotonic() - started:.1f}s:", sorted(Counter(d["status"] for d in wave.values()).items()))
        assert {d["status"] for d in wave.values()} <= {"Deployed", "Superseded", "Retired"}
        for d in wave.values():
            if d["status"] == "Superseded":  # the deployer superseded it: approved, it will never serve dev
                assert d["superseded_by"].startswith(f"{group}/") and d["approval_id"]
            if d["status"] == "Retired":
                assert d["replaced_by"].startswith(f"{group}/")

        async def test_approval() -> dict | None:
            pending = (await client.get(f"{system.url('approver')}/v1/approvals", params={
                "model_version_id": f"{group}/{first}", "stage": "test", "status": "pending"})).json()
            return pending[0] if pending else None

        approval = await eventually(test_approval, timeout=30, interval=0.5)
        decided = await client.post(f"{system.url('approver')}/v1/approvals/{approval['approval_id']}/decision",
                                    json={"decision": "approve", "comment": "ok"}, headers=system.headers("lee"))
        assert decided.status_code == 200, decided.text
        assert only_deployed(await settled(client, system, group, "test", {first})) == first

        await register_many(client, system, group, artifact, 10)  # a second wave: 51-60
        second = await settled(client, system, group, "dev", set(range(1, 61)))
        now = only_deployed(second)
        assert now > 50 and second[first]["status"] == "Retired"

        rollback = await client.post(f"{system.url('deployer')}/v1/groups/{group}/stages/dev/rollback",
                                     json={"reason": "surge drill"}, headers=system.headers("lee"))
        assert rollback.status_code == 202, rollback.text
        restored = rollback.json()["version"]

        async def rolled_back() -> dict | None:
            details = await settled(client, system, group, "dev", set(range(1, 61)))
            return details if details[now]["status"] == "RolledBack" else None

        after = await eventually(rolled_back, timeout=60, interval=0.5)
        assert only_deployed(after) == restored and after[now]["replaced_by"] == f"{group}/{restored}"

    sqs = boto_client("sqs", system.endpoint)  # the new events were consumed, none dead-lettered
    for service in ("registrar", "approver"):
        url = sqs.get_queue_url(QueueName=dlq_name(system.namespace, service))["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0", service
