"""The `modelgate` command, run as a user runs it (a process of its own), against the four real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import httpx

from shared.events import Deployed, DeployedPayload, utcnow
from shared.infra import boto_client
from shared.topology import bucket_name, dlq_name
from tests.helpers import wait_until
from tests.signed import signed


def modelgate(stack, *args: str, who: str = "ana", token: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`modelgate ARGS` as `who` (their token in MODELGATE_TOKEN), or with `token` itself."""
    env = {
        **os.environ,
        **{f"MODELGATE_{s.upper()}_URL": stack.url(s) for s in stack.ports},
        "MODELGATE_NAMESPACE": stack.namespace,
        "AWS_ENDPOINT_URL": stack.endpoint,
        "COLUMNS": "200",
    }
    env["MODELGATE_TOKEN"] = token or stack.tokens[who]
    return subprocess.run([sys.executable, "-m", "modelgate.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def gate_code(stack, *args: str) -> int:
    return modelgate(stack, "gate", *args).returncode


def test_from_a_local_file_to_test_and_back_with_the_gate_following_each_step(system, tmp_path):
    model = tmp_path / "model.joblib"
    model.write_bytes(os.urandom(200_000))
    registered = modelgate(system, "register", "churn", "--file", str(model), "-m", "auc=0.93", "-p", "num_round=100", "--json")
    assert registered.returncode == 0, registered.stderr
    version = json.loads(registered.stdout)
    assert version["model_version_id"] == "churn/1"
    bucket, key = version["artifact_uri"].removeprefix("s3://").split("/", 1)
    assert bucket == bucket_name(system.namespace)
    assert boto_client("s3", system.endpoint).head_object(Bucket=bucket, Key=key)["ContentLength"] == 200_000

    wait_until(lambda: gate_code(system, "churn", "test", "--version", "1") == 10, timeout=30, interval=0.5)
    assert gate_code(system, "churn", "dev") == 0  # dev is automatic: auc 0.93 >= 0.8
    closed = modelgate(system, "gate", "churn", "test")
    assert "waiting for approval for test" in closed.stderr

    own = modelgate(system, "approve", _pending(system, "churn/1", "test"), who="ana")
    assert own.returncode == 5 and "ana registered churn/1 and cannot approve it" in own.stderr
    no_comment = modelgate(system, "reject", _pending(system, "churn/1", "test"), who="lee")
    assert no_comment.returncode == 2

    promoted = modelgate(system, "promote", "churn", "1", "-c", "fine on the holdout", who="lee")
    assert promoted.returncode == 0, promoted.stderr
    assert "churn/1 is Deployed to test" in promoted.stdout
    assert gate_code(system, "churn", "test") == 0
    wait_until(lambda: gate_code(system, "churn", "prod") == 10, timeout=30, interval=0.5)

    shown = json.loads(modelgate(system, "show", "churn", "1", "--json").stdout)
    decided = [e for e in shown["history"] if e["event_type"] == "ApprovalDecided" and e["payload"]["stage"] == "test"]
    assert decided[0]["payload"]["decided_by"] == ["lee"] and decided[0]["payload"]["comment"] == "fine on the holdout"

    assert modelgate(system, "register", "churn", "--artifact", version["artifact_uri"], "-m", "auc=0.95").returncode == 0
    wait_until(lambda: _pending_or_none(system, "churn/2", "test"), timeout=30, interval=0.5)
    assert modelgate(system, "promote", "churn", "2", "--to", "test", who="lee").returncode == 0
    table = modelgate(system, "versions", "churn").stdout
    assert "churn: 2 version(s)" in table and "Deployed" in table

    rolled = modelgate(system, "rollback", "churn", "test", "-r", "recall alarm", who="lee")
    assert rolled.returncode == 0, rolled.stderr
    assert "test of churn serves churn/1 again" in rolled.stdout
    live = [d for d in httpx.get(f"{system.url('deployer')}/v1/deployments", params={"group": "churn"},
                                  headers=system.headers("lee")).json()
            if d["live"] and d["stage"] == "test"]
    assert [d["model_version_id"] for d in live] == ["churn/1"] and live[0]["rollback"]


def _pending_or_none(stack, model_version_id: str, stage: str) -> str | None:
    found = json.loads(modelgate(stack, "approvals", "--stage", stage, "--json").stdout)
    return next((a["approval_id"] for a in found if a["model_version_id"] == model_version_id), None)


def _pending(stack, model_version_id: str, stage: str) -> str:
    approval_id = _pending_or_none(stack, model_version_id, stage)
    assert approval_id, f"no pending {stage} approval for {model_version_id}"
    return approval_id


def test_events_tail_prints_a_new_versions_journey_and_removes_its_queue(system):
    artifact = f"s3://{bucket_name(system.namespace)}/fraud/model.bin"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key="fraud/model.bin", Body=b"m")
    env = {**os.environ, **{f"MODELGATE_{s.upper()}_URL": system.url(s) for s in system.ports},
           "MODELGATE_NAMESPACE": system.namespace, "AWS_ENDPOINT_URL": system.endpoint}
    tail = subprocess.Popen(
        [sys.executable, "-m", "modelgate.cli", "events", "tail", "--group", "fraud", "--type", "ModelRegistered",
         "--type", "Deployed", "--type", "ApprovalRequested", "--count", "3", "--for", "60", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "listening to" in tail.stderr.readline()  # subscribed: what is published from now on is seen
        other = modelgate(system, "register", "other", "--artifact", artifact, "-m", "auc=0.9")
        assert other.returncode == 0
        assert modelgate(system, "register", "fraud", "--artifact", artifact, "-m", "auc=0.9").returncode == 0
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event_type"] for e in events] == ["ModelRegistered", "Deployed", "ApprovalRequested"]
    assert {e["correlation_id"] for e in events} == {"fraud/1"}
    queues = boto_client("sqs", system.endpoint).list_queues(QueueNamePrefix=f"{system.namespace}-tail-")
    assert queues.get("QueueUrls", []) == []


def test_dlq_list_shows_why_and_redrive_hands_the_message_back_to_its_service(system, webhook):
    artifact = f"s3://{bucket_name(system.namespace)}/fraud/model.bin"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key="fraud/model.bin", Body=b"m")
    assert modelgate(system, "register", "fraud", "--artifact", artifact, "-m", "auc=0.9").returncode == 0
    wait_until(lambda: any(p["event_type"] == "Deployed" for p in webhook.posts), timeout=30)
    # a Deployed event the notifier failed on earlier (as shared.bus dead-letters it, with its reason)
    event = Deployed(producer="deployer", correlation_id="fraud/1", payload=DeployedPayload(
        group="fraud", version=1, model_version_id="fraud/1", deployment_id=str(uuid.uuid4()), stage="dev",
        target="parameter-store", artifact_uri=artifact, parameter_name="/modelgate/fraud/dev/current",
        deployed_at=utcnow()))
    sqs = boto_client("sqs", system.endpoint)
    dlq_url = sqs.get_queue_url(QueueName=dlq_name(system.namespace, "notifier"))["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=signed(system.endpoint, system.namespace, event), MessageAttributes={
        "event_type": {"DataType": "String", "StringValue": "Deployed"},
        "dlq_reason": {"DataType": "String", "StringValue": "handler failed 5 times: webhook timed out"},
    })

    listed = modelgate(system, "dlq", "list", "--service", "notifier", "--json")
    assert listed.returncode == 0, listed.stderr
    [message] = json.loads(listed.stdout)
    assert message["reason"] == "handler failed 5 times: webhook timed out"
    assert message["event_type"] == "Deployed" and message["correlation_id"] == "fraud/1"
    assert "webhook timed out" in modelgate(system, "dlq", "list").stdout  # the table, all services

    redriven = modelgate(system, "dlq", "redrive", "notifier", "--json")
    assert redriven.returncode == 0, redriven.stderr
    assert json.loads(redriven.stdout)["moved"] == [message["message_id"]]
    wait_until(lambda: any(p["event_id"] == event.event_id for p in webhook.posts), timeout=30)
    assert json.loads(modelgate(system, "dlq", "list", "--service", "notifier", "--json").stdout) == []


def test_errors_say_what_to_do(system):
    unknown = modelgate(system, "show", "nothing-here", "1")
    assert unknown.returncode == 4 and "no version 1" in unknown.stderr
    missing = modelgate(system, "register", "fraud", "--artifact", f"s3://{bucket_name(system.namespace)}/nope")
    assert missing.returncode == 6 and "does not exist; upload it first" in missing.stderr
    stranger = modelgate(system, "approvals", "--mine", token="stolen-token")
    assert stranger.returncode == 5 and "unknown token" in stranger.stderr
    nobody_home = subprocess.run([sys.executable, "-m", "modelgate.cli", "versions", "fraud"], capture_output=True,
                                 text=True, env={**os.environ, "MODELGATE_REGISTRAR_URL": "http://127.0.0.1:9"}, check=False)
    assert nobody_home.returncode == 3 and "is modelgate up? run 'make up'" in nobody_home.stderr


def test_an_admin_adds_a_principal_whose_token_is_shown_once_and_disabling_it_holds(system):
    added = modelgate(system, "principals", "add", "Zoe", "--groups", "ml-leads", "--role", "viewer", who="admin")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("mgt_") and "shown once" in added.stdout
    me = json.loads(modelgate(system, "principals", "me", "--json", token=token).stdout)
    assert (me["name"], me["groups"], me["roles"]) == ("zoe", ["ml-leads"], ["viewer"])
    listed = modelgate(system, "principals", "list", who="admin").stdout
    assert "zoe" in listed and token not in listed
    not_admin = modelgate(system, "principals", "add", "mallory", "--role", "admin", who="ana")
    assert not_admin.returncode == 5 and "ana may not add principals: that needs the admin role" in not_admin.stderr
    assert modelgate(system, "principals", "disable", "zoe", who="admin").returncode == 0
    refused = modelgate(system, "principals", "me", token=token)
    assert refused.returncode == 5 and "zoe is disabled" in refused.stderr
