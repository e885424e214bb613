"""The SageMaker bridge's edge: EventBridge bodies and DescribeModelPackage answers become typed models and
an ordinary Registration; a version's state becomes the UpdateModelPackage that shows it (docs/sagemaker.md)."""

from __future__ import annotations

import json

import pytest

from services.registrar.models import ModelVersion
from services.registrar.sagemaker_model import (
    BadBridgeEvent,
    metrics_from_report,
    package_from_description,
    parse_state_change,
    to_registration,
)
from services.registrar.sagemaker_writeback import package_update

ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/fraud-detector/3"


def event(**detail: object) -> str:
    """As SageMaker shapes it (EventBridge envelope, detail = the package's DescribeModelPackage fields)."""
    return json.dumps({
        "version": "0", "id": "e7c8a3f0-0000-4f1e-9e0b-1c2d3e4f5a6b", "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker", "account": "123456789012", "time": "2026-12-03T10:00:00Z", "region": "us-east-1",
        "resources": [ARN],
        "detail": {"ModelPackageGroupName": "fraud-detector", "ModelPackageVersion": 3, "ModelPackageArn": ARN,
                   "ModelApprovalStatus": "PendingManualApproval", "ModelPackageStatus": "Completed", **detail},
    })


DESCRIBED = {
    "ModelPackageGroupName": "fraud-detector",
    "ModelPackageVersion": 3,
    "ModelPackageArn": ARN,
    "ModelPackageDescription": "weekly retrain",
    "ModelPackageStatus": "Completed",
    "ModelApprovalStatus": "PendingManualApproval",
    "InferenceSpecification": {"Containers": [
        {"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1", "ModelDataUrl": "s3://b/pre/model.tar.gz"},
        {"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", "ModelDataUrl": "s3://b/xgb/model.tar.gz",
         "Framework": "XGBOOST"},
    ], "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
    "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "s3://b/eval/evaluation.json"}}},
    "MetadataProperties": {"CommitId": "4f1c9a2", "Repository": "https://git.example/fraud", "GeneratedBy": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/fraud/execution/abc", "ProjectId": "p-123"},
    "ModelCard": {"ModelCardStatus": "Draft", "ModelCardContent": json.dumps({
        "model_overview": {"model_description": "Scores card transactions"},
        "intended_uses": {"intended_uses": "Flag for review", "risk_rating": "Medium"},
        "additional_information": {"caveats_and_recommendations": "Not for business accounts"}})},
}


def test_an_event_as_sagemaker_shapes_it_is_a_typed_hint():
    parsed = parse_state_change(event())
    assert parsed.detail.model_package_arn == ARN and parsed.detail.model_package_version == 3
    assert parsed.detail_type == "SageMaker Model Package State Change"


@pytest.mark.parametrize("body, reason", [
    ("not json", "not JSON"),
    ("[1]", "not an EventBridge event"),
    (json.dumps({"source": "my.app", "detail-type": "SageMaker Model Package State Change", "detail": {}}), "not a SageMaker"),
    (event(ModelPackageArn="arn:aws:s3:::bucket/key"), "detail.ModelPackageArn"),
    (json.dumps({"id": "x", "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change"}), "detail"),
])
def test_what_is_not_such_an_event_is_refused_with_the_reason(body, reason):
    with pytest.raises(BadBridgeEvent, match=reason):
        parse_state_change(body)


def test_a_described_package_becomes_a_registration_by_the_bridge():
    package = package_from_description(DESCRIBED)
    reg = to_registration(package, {"auc": 0.93})
    assert reg.registered_by == "sagemaker-bridge" and reg.source == "sagemaker"
    assert reg.artifact_uri == "s3://b/pre/model.tar.gz"  # the first container's artifact
    assert reg.metrics == {"auc": 0.93} and reg.description == "weekly retrain"
    lineage = reg.lineage.model_dump()["sagemaker"]
    assert lineage["model_package_arn"] == ARN and lineage["model_package_version"] == 3
    assert (lineage["commit_id"], lineage["repository"], lineage["project_id"]) == ("4f1c9a2", "https://git.example/fraud", "p-123")
    assert lineage["generated_by"].endswith("execution/abc")
    assert lineage["image"].endswith("sagemaker-scikit-learn:1.2-1")
    assert [c["image"].rsplit("/", 1)[1] for c in reg.metadata["sagemaker"]["containers"]] == [
        "sagemaker-scikit-learn:1.2-1", "sagemaker-xgboost:1.7-1"]
    card = reg.model_card
    assert (card.summary, card.intended_use, card.risk_rating, card.limitations) == (
        "Scores card transactions", "Flag for review", "Medium", "Not for business accounts")


def test_a_package_without_a_model_card_registers_without_one():
    reg = to_registration(package_from_description({k: v for k, v in DESCRIBED.items() if k != "ModelCard"}), {})
    assert reg.model_card.model_dump(exclude_defaults=True) == {}


@pytest.mark.parametrize("change, reason", [
    ({"ModelPackageGroupName": None, "ModelPackageVersion": None}, "unversioned"),
    ({"InferenceSpecification": {"Containers": [{"Image": "x"}]}}, "no ModelDataUrl"),
])
def test_packages_modelgate_cannot_take_are_refused(change, reason):
    with pytest.raises(BadBridgeEvent, match=reason):
        to_registration(package_from_description({**DESCRIBED, **change}), {})


def test_metrics_from_the_model_quality_report_shape_and_a_flat_one():
    quality = {"version": 0.0, "binary_classification_metrics": {
        "confusion_matrix": {"0": {"0": 10, "1": 1}}, "auc": {"value": 0.93, "standard_deviation": "NaN"},
        "recall": {"value": 0.81, "standard_deviation": 0.01}, "f1": {"value": float("nan")}}}
    assert metrics_from_report(quality) == {"auc": 0.93, "recall": 0.81}
    assert metrics_from_report({"regression_metrics": {"mse": {"value": 4}}}) == {"mse": 4.0}
    assert metrics_from_report({"auc": 0.9, "ok": True, "name": "x", "curve": [1, 2]}) == {"auc": 0.9}
    assert metrics_from_report([1, 2]) == {}


def version(stages: dict, status: str) -> ModelVersion:
    return ModelVersion(id="fraud-detector/7", stages=stages, approval_status=status)


def test_the_write_back_shows_the_decision_and_the_stage_where_the_journey_moved_last():
    stages = {
        "dev": {"status": "Deployed", "at": "2026-12-03T10:00:02+00:00", "decided_by": "policy"},
        "test": {"status": "Approved", "at": "2026-12-03T10:05:00+00:00", "decided_by": "lee"},
    }
    update = package_update(version(stages, "Approved"))
    assert update["ModelApprovalStatus"] == "Approved"
    assert update["ModelLifeCycle"] == {"Stage": "test", "StageStatus": "Approved",
                                        "StageDescription": "modelgate fraud-detector/7: dev Deployed; test Approved"}
    assert update["ApprovalDescription"] == "modelgate fraud-detector/7: dev Deployed by policy; test Approved by lee"
    assert update["CustomerMetadataProperties"] == {"modelgate:model_version_id": "fraud-detector/7",
                                                    "modelgate:stage:dev": "Deployed", "modelgate:stage:test": "Approved"}


def test_a_rejection_reads_rejected_and_nothing_is_written_before_any_stage_moved():
    stages = {"dev": {"status": "Rejected", "at": "2026-12-03T10:00:00+00:00", "decided_by": "policy"}}
    assert package_update(version(stages, "Rejected"))["ModelApprovalStatus"] == "Rejected"
    assert package_update(version({}, "PendingManualApproval")) is None
