"""The SageMaker Model Registry bridge on the whole journey (docs/sagemaker.md).

Where each part runs: LocalStack's EventBridge carries the "SageMaker Model Package State Change" event
(put with PutEvents by this test, shaped exactly as SageMaker shapes it: source aws.sagemaker, the package's
fields as detail), through the rule shared/infra.py provisions, to the registrar's bridge queue (LocalStack's
SQS). SageMaker itself is moto's server (LocalStack's free edition has none): the package is created there,
and the registrar reads it (DescribeModelPackage) and writes the decisions back (UpdateModelPackage) there.

moto 5.2.5 accepts UpdateModelPackage's ModelLifeCycle but drops it (and DescribeModelPackage has no
ModelLifeCycle or ModelCard). `keep_model_life_cycle` below makes moto keep and return what it was sent,
as SageMaker does; nothing else of moto is changed. The write-back is also visible without it, in
ModelApprovalStatus and CustomerMetadataProperties, which moto keeps itself.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from shared import topology
from shared.infra import boto_client
from tests.e2e.conftest import free_port
from tests.helpers import eventually

GROUP = f"fraud-sm-{uuid.uuid4().hex[:6]}"
OTHER_GROUP = f"other-sm-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def keep_model_life_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto keeps UpdateModelPackage's ModelLifeCycle and DescribeModelPackage returns it (see the docstring)."""
    from moto.sagemaker import models, responses

    update = responses.SageMakerResponse.update_model_package

    def update_keeping(self: Any) -> Any:
        result = update(self)
        life_cycle = self._get_param("ModelLifeCycle")
        if life_cycle is not None:
            backend = self.sagemaker_backend
            arn = backend.model_package_name_mapping.get(self._get_param("ModelPackageArn"))
            backend.model_packages[arn].kept_model_life_cycle = life_cycle
        return result

    describe = models.ModelPackage.gen_response_object

    def describe_with_life_cycle(self: Any) -> dict[str, Any]:
        response = describe(self)
        if getattr(self, "kept_model_life_cycle", None) is not None:
            response["ModelLifeCycle"] = self.kept_model_life_cycle
        return response

    monkeypatch.setattr(responses.SageMakerResponse, "update_model_package", update_keeping)
    monkeypatch.setattr(models.ModelPackage, "gen_response_object", describe_with_life_cycle)


@pytest.fixture
def moto(keep_model_life_cycle):  # type: ignore[no-untyped-def]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def system_env(moto) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "MODELGATE_SAGEMAKER_BRIDGE": "true",
        "MODELGATE_SAGEMAKER_GROUPS": f"{GROUP},{OTHER_GROUP}-allowed",  # OTHER_GROUP is not allowed
        "AWS_ENDPOINT_URL_SAGEMAKER": moto,
    }


def sagemaker_client(url: str) -> Any:
    return boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t",
                        aws_secret_access_key="t")


def create_package(sm: Any, s3: Any, bucket: str, group: str, auc: float) -> dict[str, Any]:
    """A package as a SageMaker Pipeline's RegisterModel step makes it: artifact, image, metrics report in S3
    (the model-quality report shape), metadata properties; returns DescribeModelPackage's answer."""
    key = f"{group}/{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=bucket, Key=f"{key}/model.tar.gz", Body=b"model bytes " + key.encode())
    report = {"version": 0.0, "binary_classification_metrics": {"auc": {"value": auc, "standard_deviation": "NaN"},
                                                                "recall": {"value": 0.8, "standard_deviation": "NaN"}}}
    s3.put_object(Bucket=bucket, Key=f"{key}/evaluation.json", Body=json.dumps(report).encode())
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"retrain with auc {auc}",
        InferenceSpecification={
            "Containers": [{"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                            "ModelDataUrl": f"s3://{bucket}/{key}/model.tar.gz", "Framework": "XGBOOST"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": f"s3://{bucket}/{key}/evaluation.json"}}},
        MetadataProperties={"CommitId": "4f1c9a2", "Repository": "https://git.example/fraud",
                            "GeneratedBy": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/fraud/execution/x1",
                            "ProjectId": "p-42"},
        ModelApprovalStatus="PendingManualApproval",
    )["ModelPackageArn"]
    return sm.describe_model_package(ModelPackageName=arn)


def state_change(described: dict[str, Any]) -> dict[str, Any]:
    """The PutEvents entry SageMaker's own event is: source aws.sagemaker, the package ARN as resource, and
    the package's fields as detail."""
    detail = {k: v for k, v in described.items() if k != "ResponseMetadata"}
    return {"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
            "Resources": [described["ModelPackageArn"]], "Detail": json.dumps(detail, default=str)}


def put(events: Any, *entries: dict[str, Any]) -> None:
    answer = events.put_events(Entries=list(entries))
    assert answer["FailedEntryCount"] == 0, answer


def dead_letters(system: Any) -> list[tuple[dict[str, Any], str]]:
    sqs = boto_client("sqs", system.endpoint)
    url = sqs.get_queue_url(QueueName=topology.sagemaker_dlq_name(system.namespace))["QueueUrl"]
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1,
                                MessageAttributeNames=["All"]).get("Messages", [])
    out = []
    for m in found:
        try:
            body = json.loads(m["Body"])
        except ValueError:
            body = {"raw": m["Body"]}
        out.append((body, m["MessageAttributes"]["dlq_reason"]["StringValue"]))
    return out


async def test_a_sagemaker_package_is_registered_once_approved_deployed_and_written_back(system, moto):
    sm, s3, events = sagemaker_client(moto), boto_client("s3", system.endpoint), boto_client("events", system.endpoint)
    bucket = topology.bucket_name(system.namespace)
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    good = create_package(sm, s3, bucket, GROUP, auc=0.95)
    weak = create_package(sm, s3, bucket, GROUP, auc=0.5)
    # SageMaker may send several events per state change, in any order: the weak package's first, the good
    # one's twice around it, and the weak one's again.
    put(events, state_change(weak), state_change(good))
    put(events, state_change(good), state_change(weak))

    async with httpx.AsyncClient(timeout=30, headers=system.headers("admin")) as client:
        registrar = system.url("registrar")

        async def versions() -> list[dict[str, Any]] | None:
            answer = await client.get(f"{registrar}/v1/groups/{GROUP}/versions")
            rows = answer.json() if answer.status_code == 200 else []
            return rows if len(rows) >= 2 else None

        await eventually(versions, timeout=60, interval=0.5)

        async def by_arn() -> dict[str, dict[str, Any]]:
            found = {}
            for number in (1, 2, 3):
                answer = await client.get(f"{registrar}/v1/groups/{GROUP}/versions/{number}")
                if answer.status_code == 200:
                    record = answer.json()
                    found.setdefault(record["lineage"]["sagemaker"]["model_package_arn"], []).append(record)
            return found

        registered = await by_arn()
        assert sorted(registered) == sorted([good["ModelPackageArn"], weak["ModelPackageArn"]])
        assert all(len(records) == 1 for records in registered.values()), "one version per package, however often"
        version = registered[good["ModelPackageArn"]][0]
        assert version["registered_by"] == "sagemaker-bridge" and version["source"] == "sagemaker"
        principals = (await client.get(f"{system.url('approver')}/v1/principals")).json()
        bridge = next(p for p in principals if p["name"] == "sagemaker-bridge")  # ensured by the approver
        assert bridge["kind"] == "service" and bridge["roles"] == []
        history = (await client.get(f"{registrar}/v1/groups/{GROUP}/versions/{version['version']}/history")).json()
        registered_event = next(e for e in history if e["event_type"] == "ModelRegistered")
        assert registered_event["payload"]["registered_by"] == "sagemaker-bridge"
        assert version["metrics"] == {"auc": 0.95, "recall": 0.8}
        assert version["artifact_uri"] == good["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        assert version["artifact_digest"].startswith("sha256:")  # pinned like any registration
        lineage = version["lineage"]["sagemaker"]
        assert lineage["model_package_version"] == good["ModelPackageVersion"] == 1
        assert (lineage["commit_id"], lineage["project_id"], lineage["repository"]) == ("4f1c9a2", "p-42",
                                                                                        "https://git.example/fraud")
        assert lineage["image"].endswith("sagemaker-xgboost:1.7-1")
        number = version["version"]

        async def stage(n: int, name: str, status: str) -> dict[str, Any] | None:
            record = (await client.get(f"{registrar}/v1/groups/{GROUP}/versions/{n}")).json()
            return record if (record.get("stages") or {}).get(name) == status else None

        await eventually(lambda: stage(number, "dev", "Deployed"), timeout=60, interval=0.5)
        weak_number = registered[weak["ModelPackageArn"]][0]["version"]
        await eventually(lambda: stage(weak_number, "dev", "Rejected"), timeout=30, interval=0.5)

        async def pending_test() -> list[dict[str, Any]]:
            pending = (await client.get(f"{system.url('approver')}/v1/approvals", params={"status": "pending"})).json()
            return [a for a in pending if a["model_version_id"] == f"{GROUP}/{number}" and a["stage"] == "test"]

        approval = (await eventually(pending_test, timeout=30))[0]
        decided = await client.post(f"{system.url('approver')}/v1/approvals/{approval['approval_id']}/decision",
                                    json={"decision": "approve", "comment": "ok"}, headers=system.headers("lee"))
        assert decided.status_code == 200, decided.text
        await eventually(lambda: stage(number, "test", "Deployed"), timeout=60, interval=0.5)

    async def written_back(arn: str, stage_name: str, status: str) -> dict[str, Any] | None:
        described = sm.describe_model_package(ModelPackageName=arn)
        life_cycle = described.get("ModelLifeCycle") or {}
        return described if (life_cycle.get("Stage"), life_cycle.get("StageStatus")) == (stage_name, status) else None

    described = await eventually(lambda: written_back(good["ModelPackageArn"], "test", "Deployed"), timeout=30, interval=0.5)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ModelLifeCycle"]["StageDescription"] == f"modelgate {GROUP}/{number}: dev Deployed; test Deployed"
    assert described["CustomerMetadataProperties"] == {"modelgate:model_version_id": f"{GROUP}/{number}",
                                                       "modelgate:stage:dev": "Deployed",
                                                       "modelgate:stage:test": "Deployed"}
    assert "test Deployed by lee" in described["ApprovalDescription"]
    rejected = await eventually(lambda: written_back(weak["ModelPackageArn"], "dev", "Rejected"), timeout=30, interval=0.5)
    assert rejected["ModelApprovalStatus"] == "Rejected"
    # the write-backs' own state-change events come back through the rule: known packages, nothing new
    async with httpx.AsyncClient(timeout=30, headers=system.headers("admin")) as client:
        assert len((await client.get(f"{system.url('registrar')}/v1/groups/{GROUP}/versions")).json()) == 2


async def test_forged_malformed_and_refused_events_register_nothing_and_are_dead_lettered(system, moto):
    sm, s3, events = sagemaker_client(moto), boto_client("s3", system.endpoint), boto_client("events", system.endpoint)
    bucket = topology.bucket_name(system.namespace)
    sm.create_model_package_group(ModelPackageGroupName=OTHER_GROUP)
    not_allowed = create_package(sm, s3, bucket, OTHER_GROUP, auc=0.95)
    forged_arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/99"
    forged = {"ModelPackageGroupName": GROUP, "ModelPackageVersion": 99, "ModelPackageArn": forged_arn,
              "ModelPackageStatus": "Completed", "ModelApprovalStatus": "Approved",
              "InferenceSpecification": {"Containers": [{"Image": "evil", "ModelDataUrl": f"s3://{bucket}/evil.tar.gz"}]}}
    put(events,
        {"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change", "Resources": [forged_arn],
         "Detail": json.dumps(forged)},  # SageMaker has no such package: only the event says so
        {"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change", "Resources": [],
         "Detail": json.dumps({"ModelPackageGroupName": GROUP})},  # no package ARN
        # a real package of a group the bridge may not register, in an event claiming an allowed group (so the
        # rule, which matches MODELGATE_SAGEMAKER_GROUPS, lets it through): DescribeModelPackage says otherwise
        {**state_change(not_allowed), "Detail": json.dumps({**json.loads(state_change(not_allowed)["Detail"]),
                                                            "ModelPackageGroupName": GROUP})})

    async def three() -> list[tuple[dict[str, Any], str]] | None:
        found = dead_letters(system)
        return found if len(found) >= 3 else None

    reasons = sorted(reason for _body, reason in await eventually(three, timeout=60, interval=1))
    assert any(r.startswith("malformed SageMaker event: detail.ModelPackageArn") for r in reasons), reasons
    assert any(r.startswith(f"not confirmed: DescribeModelPackage({forged_arn})") for r in reasons), reasons
    assert any(r.startswith(f"refused: model package group '{OTHER_GROUP}'") for r in reasons), reasons
    async with httpx.AsyncClient(timeout=30, headers=system.headers("admin")) as client:
        for group in (GROUP, OTHER_GROUP):
            answer = await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/1")
            assert answer.status_code == 404, answer.text
    assert "ModelLifeCycle" not in sm.describe_model_package(ModelPackageName=not_allowed["ModelPackageArn"])
