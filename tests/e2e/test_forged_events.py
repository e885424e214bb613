"""A forged approval deploys nothing. The four services run as processes on LocalStack, where anyone may
publish to the topic or send to a queue: an unsigned ApprovalDecided published straight to SNS, one signed by
the registrar's key (a compromised registrar), one claiming the registrar produced it, and a genuinely signed
one changed on the way (sent straight to the deployer's queue) each land in the deployer's DLQ with the
reason, are counted in /metrics, and no deployment or Parameter Store pointer appears. A real journey still
deploys. (The test signs as the producers would, with their keys from LocalStack's Secrets Manager.)"""

from __future__ import annotations

import base64
import json
import re
import uuid

import httpx

from shared.events import ApprovalDecided, ApprovalDecidedPayload
from shared.infra import boto_client
from shared.signing import canonical
from shared.topology import bucket_name, dlq_name, parameter_name, queue_name, topic_name
from tests.helpers import eventually, wait_until
from tests.signed import owners


def decision(group: str, stage: str = "prod") -> ApprovalDecided:
    payload = ApprovalDecidedPayload(
        group=group, version=1, model_version_id=f"{group}/1", approval_id=str(uuid.uuid4()), stage=stage,
        decision="Approved", decided_by=["mallory"], automatic=False, policy_rule="forged",
        artifact_uri=f"s3://attacker/{group}.bin")
    return ApprovalDecided(producer="approver", correlation_id=f"{group}/1", payload=payload)


def dead_letters(system) -> dict[str, str]:
    """event_id -> dlq_reason of what the deployer dead-lettered (left visible)."""
    sqs = boto_client("sqs", system.endpoint)
    url = sqs.get_queue_url(QueueName=dlq_name(system.namespace, "deployer"))["QueueUrl"]
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1,
                                MessageAttributeNames=["All"]).get("Messages", [])
    return {json.loads(m["Body"])["event_id"]: m["MessageAttributes"]["dlq_reason"]["StringValue"] for m in found}


async def test_forged_and_tampered_approvals_are_dead_lettered_with_the_reason_and_deploy_nothing(system):
    group = f"forged-{uuid.uuid4().hex[:6]}"
    producers = await owners(system.endpoint, system.namespace)
    sns, sqs = boto_client("sns", system.endpoint), boto_client("sqs", system.endpoint)
    attributes = {"event_type": {"DataType": "String", "StringValue": "ApprovalDecided"}}

    unsigned = decision(group)
    sns.publish(TopicArn=sns.create_topic(Name=topic_name(system.namespace))["TopicArn"],
                Message=unsigned.model_dump_json(), MessageAttributes=attributes)

    registrar = producers.signers["registrar"]
    by_registrar_key, claims_registrar, tampered = decision(group), decision(group), decision(group, "dev")
    stolen = json.loads(by_registrar_key.model_dump_json())
    stolen["signature"] = {"key_id": registrar.key_id,
                           "value": base64.urlsafe_b64encode(registrar.private.sign(canonical(stolen))).decode()}
    wrong = json.loads(claims_registrar.model_dump_json()) | {"producer": "registrar"}
    wrong["signature"] = {"key_id": registrar.key_id,
                          "value": base64.urlsafe_b64encode(registrar.private.sign(canonical(wrong))).decode()}
    changed = json.loads(producers.signed(tampered))
    changed["payload"]["stage"] = "prod"
    queue = sqs.get_queue_url(QueueName=queue_name(system.namespace, "deployer"))["QueueUrl"]
    for body in (stolen, wrong, changed):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body), MessageAttributes=attributes)

    def all_four_dead() -> dict[str, str]:
        found = dead_letters(system)
        return found if len(found) >= 4 else {}

    reasons = wait_until(all_four_dead, timeout=60)
    assert "unsigned ApprovalDecided" in reasons[unsigned.event_id]
    assert "is not a signing key of the approver" in reasons[by_registrar_key.event_id]
    assert "'registrar' may not emit ApprovalDecided: only the approver does" in reasons[claims_registrar.event_id]
    assert "does not match" in reasons[tampered.event_id]

    async with httpx.AsyncClient(timeout=30, headers=system.headers("admin")) as client:
        deployments = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert deployments == []
        metrics = (await client.get(f"{system.url('deployer')}/metrics")).text
        counts = {kind: float(v) for kind, v in re.findall(r'modelgate_events_refused_total\{kind="(\w+)"\} (\S+)', metrics)}
        assert counts.get("unsigned") == 1 and counts.get("unknown_key") == 1
        assert counts.get("not_owner") == 1 and counts.get("bad_signature") == 1
        ssm = boto_client("ssm", system.endpoint)
        for stage in ("dev", "prod"):
            assert not ssm.get_parameters(Names=[parameter_name(group, stage)])["Parameters"]

        key = f"{group}/model.bin"  # the real path still deploys
        boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
        body = {"artifact_uri": f"s3://{bucket_name(system.namespace)}/{key}", "metrics": {"auc": 0.95}}
        registered = await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body,
                                       headers=system.headers("ana"))
        assert registered.status_code == 201, registered.text

        async def deployed() -> bool:
            found = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
            return [(d["version"], d["stage"], d["status"]) for d in found] == [(1, "dev", "Deployed")]

        await eventually(deployed, timeout=60)
