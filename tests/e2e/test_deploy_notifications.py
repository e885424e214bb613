"""Notifications on the real journey: SES email (read back from LocalStack's mailbox at /_aws/ses) and
the Slack-compatible webhook each get one message per event and recipient, even when an event repeats."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter

import httpx
import pytest
import yaml

from shared.infra import boto_client
from shared.topology import bucket_name, topic_name
from tests.helpers import eventually
from tests.signed import owners

SENDER = f"modelgate-{uuid.uuid4().hex[:8]}@example.com"
ROUTING = {
    "audiences": {
        "team": {"webhook": "default", "email": ["team@example.com"], "sns": True},
        "ml-leads": {"email": ["leads@example.com"]},
        "on-call": {"email": ["oncall@example.com"]},
    },
    "routes": {
        "ApprovalRequested": ["approvers", "team"],
        "ApprovalDecided": ["team"],
        "Deployed": ["team"],
        "DeploymentFailed": ["on-call", "team"],
    },
}


@pytest.fixture
def system_env(localstack_endpoint, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    boto_client("ses", localstack_endpoint).verify_email_identity(EmailAddress=SENDER)
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump(ROUTING))
    return {"MODELGATE_EMAIL_SENDER": SENDER, "MODELGATE_ROUTING_FILE": str(routing)}


def mails(endpoint: str) -> list[dict]:
    return httpx.get(f"{endpoint}/_aws/ses", params={"email": SENDER}).json()["messages"]


async def test_email_and_webhook_deliveries_arrive_once_each(system, webhook):
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    key = f"{group}/model.bin"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        body = {"artifact_uri": f"s3://{bucket_name(system.namespace)}/{key}", "metrics": {"auc": 0.95}}
        assert (await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)).status_code == 201

        async def all_mail_in() -> list[dict]:  # decided, deployed, test approval requested: to team; the request to ml-leads
            found = mails(system.endpoint)
            return found if len(found) >= 4 else []

        await eventually(all_mail_in, timeout=60, interval=0.5)
        history = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/1/history")).json()
        deployed = next(e for e in history if e["event_type"] == "Deployed")
        metrics_url = f"{system.url('notifier')}/metrics"

        def duplicates(text: str) -> float:
            return sum(float(v) for v in re.findall(r'modelgate_events_handled_total\{event_type="Deployed",outcome="duplicate"\} (\S+)', text))

        before = duplicates((await client.get(metrics_url)).text)
        sns = boto_client("sns", system.endpoint)
        envelope = {"event_type": "Deployed", "event_id": deployed["event_id"], "producer": "deployer",
                    "correlation_id": f"{group}/1", "occurred_at": deployed["occurred_at"], "payload": deployed["payload"]}
        sns.publish(  # the same Deployed event once more, as a redelivery would bring it
            TopicArn=sns.create_topic(Name=topic_name(system.namespace))["TopicArn"], Message=(await owners(system.endpoint, system.namespace)).sign(json.dumps(envelope)),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": "Deployed"}},
        )

        async def repeat_seen() -> bool:
            return duplicates((await client.get(metrics_url)).text) >= before + 1

        await eventually(repeat_seen, timeout=60, interval=0.5)
        deliveries_url, query = f"{system.url('notifier')}/v1/deliveries", {"correlation_id": f"{group}/1"}
        refused = await client.get(deliveries_url, params=query)  # recipients are people's addresses: not for ana
        assert refused.status_code == 403 and "auditor" in refused.json()["detail"]
        assert (await client.get(deliveries_url, params=query, headers={"Authorization": ""})).status_code == 401
        deliveries = (await client.get(deliveries_url, params=query, headers=system.headers("admin"))).json()

    found = mails(system.endpoint)
    assert Counter(m["Destination"]["ToAddresses"][0] for m in found) == {"team@example.com": 3, "leads@example.com": 1}
    subjects = sorted(m["Subject"] for m in found)
    assert subjects == sorted([f"{group}/1 approved for dev", f"Deployed: {group}/1 is live in dev",
                               f"Approval needed: {group}/1 for test", f"Approval needed: {group}/1 for test"])
    request_mail = next(m for m in found if m["Destination"]["ToAddresses"] == ["leads@example.com"])
    assert "modelgate approve" in request_mail["Body"]["text_part"]
    posts = [p for p in webhook.posts if p.get("model_version_id") == f"{group}/1"]
    assert sorted(p["event_type"] for p in posts) == ["ApprovalDecided", "ApprovalRequested", "Deployed"]
    assert any(p["event_id"] == deployed["event_id"] for p in posts)
    assert {(d["channel"], d["status"]) for d in deliveries} == {("log", "sent"), ("email", "sent"), ("webhook", "sent"), ("sns", "sent")}
    assert len(deliveries) == 3 * 4 + 1  # three events on log, webhook, sns and team's email; the request to ml-leads
