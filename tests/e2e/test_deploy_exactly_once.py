"""A duplicated approval on the real bus deploys once: the same ApprovalDecided published again, and a
copy with a new event_id (same approval), change nothing. Four services as processes on LocalStack."""

from __future__ import annotations

import re
import uuid

import httpx

from shared.events import ApprovalDecided, ApprovalDecidedPayload
from shared.infra import boto_client
from shared.topology import bucket_name, topic_name
from tests.helpers import eventually
from tests.signed import owners


def handled(metrics: str, event_type: str, outcomes: tuple[str, ...]) -> float:
    total = 0.0
    for outcome in outcomes:
        pattern = rf'modelgate_events_handled_total\{{event_type="{event_type}",outcome="{outcome}"\}} (\S+)'
        total += sum(float(v) for v in re.findall(pattern, metrics))
    return total


async def test_a_duplicated_approval_deploys_once(system, webhook):
    group = f"churn-{uuid.uuid4().hex[:6]}"
    key = f"{group}/model.bin"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        body = {"artifact_uri": f"s3://{bucket_name(system.namespace)}/{key}", "metrics": {"auc": 0.95}}
        assert (await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)).status_code == 201
        history_url = f"{system.url('registrar')}/v1/groups/{group}/versions/1/history"

        async def journey_done() -> list:
            history = (await client.get(history_url)).json()
            return history if "ApprovalRequested" in [e["event_type"] for e in history] else []

        history = await eventually(journey_done, timeout=60)
        decided = next(e for e in history if e["event_type"] == "ApprovalDecided")
        original = ApprovalDecided(
            event_id=decided["event_id"], producer="approver", correlation_id=f"{group}/1",
            occurred_at=decided["occurred_at"], payload=ApprovalDecidedPayload.model_validate(decided["payload"], context={"tolerant": True}),
        )
        copy = original.model_copy(update={"event_id": str(uuid.uuid4())})
        metrics_url = f"{system.url('deployer')}/metrics"
        before = handled((await client.get(metrics_url)).text, "ApprovalDecided", ("duplicate", "skipped"))
        sns = boto_client("sns", system.endpoint)
        arn = sns.create_topic(Name=topic_name(system.namespace))["TopicArn"]
        producers = await owners(system.endpoint, system.namespace)  # the test signs as the approver would
        for event in (original, original, copy):
            sns.publish(TopicArn=arn, Message=producers.signed(event),
                        MessageAttributes={"event_type": {"DataType": "String", "StringValue": event.event_type}})

        async def all_three_seen() -> bool:
            return handled((await client.get(metrics_url)).text, "ApprovalDecided", ("duplicate", "skipped")) >= before + 3

        await eventually(all_three_seen, timeout=60, interval=0.5)
        deployments = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert [(d["version"], d["stage"], d["status"]) for d in deployments] == [(1, "dev", "Deployed")]
        deployed = [e for e in (await client.get(history_url)).json() if e["event_type"] == "Deployed"]
        assert len(deployed) == 1
    posts = [p for p in webhook.posts if p.get("model_version_id") == f"{group}/1"]
    assert len(posts) == len({p["event_id"] for p in posts})  # one post per event, however often it came


async def test_twenty_versions_approved_together_leave_the_newest_live_each_deployed_at_most_once(system, webhook):
    """Versions approved for dev together: the newest ends up live, the stage never goes back to an older
    one, the others are recorded as superseded, and every event is announced once."""
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    key = f"{group}/model.bin"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
    body = {"artifact_uri": f"s3://{bucket_name(system.namespace)}/{key}", "metrics": {"auc": 0.93}}
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        for _ in range(20):
            assert (await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)).status_code == 201

        async def all_settled() -> list:
            rows = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
            done = len(rows) == 20 and all(d["status"] in ("Deployed", "Superseded") for d in rows)
            return rows if done and any(d["live"] and d["version"] == 20 for d in rows) else []

        rows = await eventually(all_settled, timeout=90, interval=0.5)
        deployed = sorted((d["deployed_at"], d["version"]) for d in rows if d["status"] == "Deployed")
        assert [v for _, v in deployed] == sorted(v for _, v in deployed) and deployed[-1][1] == 20
        superseded = [d for d in rows if d["status"] == "Superseded"]
        assert all("newer" in d["reason"] for d in superseded)

        async def all_announced() -> list:  # each version decided; each deployed one also Deployed + test requested
            posts = [p for p in webhook.posts if p.get("model_version_id", "").startswith(f"{group}/")]
            return posts if len(posts) >= 20 + 2 * len(deployed) else []

        posts = await eventually(all_announced, timeout=30)
    assert len({p["event_id"] for p in posts}) == len(posts)
