"""SageMaker Model Registry, as the registrar's bridge sees it: typed models at the bus edge, and the
translation of a described model package into an ordinary `Registration`.

Nothing past this module sees a boto dict or an EventBridge body:
- `parse_state_change(body)` turns a bridge queue message into a `PackageStateChange`, or raises
  `BadBridgeEvent` saying what is wrong (it is dead-lettered with that reason). The event is a hint only: it
  names a package ARN to look up, nothing in it is registered.
- `package_from_description(described)` turns DescribeModelPackage's answer, the authority, into a
  `SageMakerPackage`; `metrics_from_report(doc)` reads a ModelMetrics S3 report (SageMaker's model-quality
  shape, or a flat {"metric": number}); `to_registration(package, metrics)` makes the Registration the bridge
  registers (where each field lands: docs/sagemaker.md, "Where it lands").
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.registrar.catalog import GROUP_NAME, Registration
from shared.topology import SAGEMAKER_BRIDGE_PRINCIPAL, SAGEMAKER_DETAIL_TYPE, SAGEMAKER_SOURCE

#: What a SageMaker model package ARN looks like (versioned: .../model-package/<group>/<version>).
PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[A-Za-z0-9/_.-]{1,200}$")


class BadBridgeEvent(ValueError):
    """The message is not a SageMaker Model Package State Change event the bridge can look up: dead-lettered
    with this reason, and nothing is registered."""


class PackageDetail(BaseModel):
    """The `detail` of SageMaker's event; only the ARN is used (to describe the package), the rest is compared."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model_package_arn: str = Field(alias="ModelPackageArn", max_length=256, pattern=PACKAGE_ARN.pattern)
    model_package_group_name: str | None = Field(None, alias="ModelPackageGroupName", max_length=200)
    model_package_version: int | None = Field(None, alias="ModelPackageVersion")
    model_approval_status: str | None = Field(None, alias="ModelApprovalStatus", max_length=40)


class PackageStateChange(BaseModel):
    """An EventBridge "SageMaker Model Package State Change" event (source aws.sagemaker)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    id: str = Field(max_length=100)
    source: Literal["aws.sagemaker"]
    detail_type: Literal["SageMaker Model Package State Change"] = Field(alias="detail-type")
    account: str | None = Field(None, max_length=20)
    region: str | None = Field(None, max_length=40)
    time: str | None = Field(None, max_length=40)
    detail: PackageDetail


def parse_state_change(body: str) -> PackageStateChange:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadBridgeEvent(f"malformed SageMaker event: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadBridgeEvent(f"malformed SageMaker event: a JSON {type(data).__name__}, not an EventBridge event")
    if data.get("source") != SAGEMAKER_SOURCE or data.get("detail-type") != SAGEMAKER_DETAIL_TYPE:
        raise BadBridgeEvent(f"not a SageMaker model package event: source {str(data.get('source'))[:60]!r}, "
                             f"detail-type {str(data.get('detail-type'))[:80]!r} (the bridge takes source "
                             f"{SAGEMAKER_SOURCE!r}, detail-type {SAGEMAKER_DETAIL_TYPE!r})")
    try:
        return PackageStateChange.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise BadBridgeEvent(f"malformed SageMaker event: {problems}") from None


# ---------------------------------------------------------------- the package, as DescribeModelPackage says


class Container(BaseModel):
    image: str | None = None
    model_data_url: str | None = None
    framework: str | None = None
    framework_version: str | None = None


class MetricReport(BaseModel):
    """One ModelMetrics report: e.g. kind "ModelQuality.Statistics" and its S3 URI."""

    kind: str
    s3_uri: str
    content_type: str | None = None


class SageMakerPackage(BaseModel):
    arn: str
    group: str | None  # None: an unversioned package (not in a group)
    version: int | None
    status: str  # ModelPackageStatus: Pending | InProgress | Completed | Failed | Deleting
    approval_status: str | None = None
    description: str = ""
    containers: list[Container] = Field(default_factory=list)
    metric_reports: list[MetricReport] = Field(default_factory=list)
    commit_id: str | None = None
    repository: str | None = None
    generated_by: str | None = None
    project_id: str | None = None
    model_card: dict[str, Any] | None = None  # ModelCard.ModelCardContent, parsed; None when absent
    customer_metadata: dict[str, str] = Field(default_factory=dict)
    created_by: str | None = None

    @property
    def artifact_uri(self) -> str | None:
        return next((c.model_data_url for c in self.containers if c.model_data_url), None)

    @property
    def image(self) -> str | None:
        return next((c.image for c in self.containers if c.image), None)


#: The ModelMetrics reports read for metrics, in order (later ones do not overwrite earlier names).
METRIC_REPORTS = ("ModelQuality.Statistics", "ModelQuality.Constraints", "ModelDataQuality.Statistics",
                  "Bias.Report", "Bias.PostTrainingReport", "Explainability.Report")


def _reports(model_metrics: dict[str, Any]) -> list[MetricReport]:
    found = []
    for kind in METRIC_REPORTS:
        section, part = kind.split(".")
        source = ((model_metrics.get(section) or {}).get(part) or {})
        if isinstance(source, dict) and isinstance(source.get("S3Uri"), str):
            found.append(MetricReport(kind=kind, s3_uri=source["S3Uri"], content_type=source.get("ContentType")))
    return found


def _model_data_url(container: dict[str, Any]) -> str | None:
    if isinstance(container.get("ModelDataUrl"), str):
        return container["ModelDataUrl"]
    s3 = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
    return s3.get("S3Uri") if isinstance(s3.get("S3Uri"), str) else None


def _model_card(described: dict[str, Any]) -> dict[str, Any] | None:
    card = described.get("ModelCard") or {}
    content = card.get("ModelCardContent")
    if not content:
        return None
    try:
        parsed = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def package_from_description(described: dict[str, Any]) -> SageMakerPackage:
    """The package as DescribeModelPackage describes it (the only source the bridge registers from)."""
    spec = described.get("InferenceSpecification") or {}
    metadata = described.get("MetadataProperties") or {}
    created_by = described.get("CreatedBy") or {}
    return SageMakerPackage(
        arn=described["ModelPackageArn"],
        group=described.get("ModelPackageGroupName"),
        version=described.get("ModelPackageVersion"),
        status=str(described.get("ModelPackageStatus") or "Completed"),
        approval_status=described.get("ModelApprovalStatus"),
        description=str(described.get("ModelPackageDescription") or ""),
        containers=[Container(image=c.get("Image"), model_data_url=_model_data_url(c), framework=c.get("Framework"),
                              framework_version=c.get("FrameworkVersion"))
                    for c in spec.get("Containers") or [] if isinstance(c, dict)],
        metric_reports=_reports(described.get("ModelMetrics") or {}),
        commit_id=metadata.get("CommitId"),
        repository=metadata.get("Repository"),
        generated_by=metadata.get("GeneratedBy"),
        project_id=metadata.get("ProjectId"),
        model_card=_model_card(described),
        customer_metadata={str(k): str(v) for k, v in (described.get("CustomerMetadataProperties") or {}).items()},
        created_by=created_by.get("UserProfileName") or created_by.get("IamIdentity", {}).get("Arn"),
    )


# ---------------------------------------------------------------- metrics reports


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def metrics_from_report(doc: Any) -> dict[str, float]:
    """Metric name -> number from a ModelMetrics report: SageMaker's model-quality shape
    (`{"binary_classification_metrics": {"auc": {"value": 0.93, "standard_deviation": ...}}}`, any
    `*_metrics` section), or a flat `{"auc": 0.93}`. Anything else (confusion matrices, curves, NaN) is left out."""
    if not isinstance(doc, dict):
        return {}
    found: dict[str, float] = {}
    for name, value in doc.items():
        if isinstance(value, dict) and str(name).endswith("_metrics"):
            for metric, entry in value.items():
                if (number := _number(entry)) is not None:
                    found.setdefault(str(metric), number)
        elif (number := _number(value)) is not None and name not in {"version"}:
            found.setdefault(str(name), number)
    return found


# ---------------------------------------------------------------- the registration


def _card(content: dict[str, Any] | None) -> dict[str, Any]:
    """SageMaker's model card content (its JSON schema's sections) as modelgate's model card fields."""
    if not content:
        return {}
    overview = content.get("model_overview") or {}
    uses = content.get("intended_uses") or {}
    extra = content.get("additional_information") or {}
    evaluations = content.get("evaluation_details") or []
    training = content.get("training_details") or {}
    card = {
        "summary": overview.get("model_description"),
        "intended_use": uses.get("intended_uses") or uses.get("purpose_of_model"),
        "limitations": extra.get("caveats_and_recommendations"),
        "ethical_considerations": extra.get("ethical_considerations"),
        "risk_rating": uses.get("risk_rating") if uses.get("risk_rating") in {"High", "Medium", "Low", "Unknown"} else None,
        "risk_rating_explanation": uses.get("explanations_for_risk_rating"),
        "training_data": (training.get("training_job_details") or {}).get("training_datasets") and
        ", ".join(map(str, training["training_job_details"]["training_datasets"])),
        "evaluation": "; ".join(str(e.get("name")) for e in evaluations if isinstance(e, dict) and e.get("name")) or None,
    }
    result = {k: str(v)[:4000] for k, v in card.items() if v}
    result["custom_details"] = {"sagemaker_model_card": content}
    return result


def lineage_of(package: SageMakerPackage) -> dict[str, Any]:
    return {"sagemaker": {k: v for k, v in {
        "model_package_arn": package.arn,
        "model_package_group": package.group,
        "model_package_version": package.version,
        "image": package.image,
        "commit_id": package.commit_id,
        "repository": package.repository,
        "generated_by": package.generated_by,
        "project_id": package.project_id,
        "metric_reports": [r.model_dump(exclude_none=True) for r in package.metric_reports] or None,
    }.items() if v is not None}}


def to_registration(package: SageMakerPackage, metrics: dict[str, float]) -> Registration:
    """The registration of a described package, by the bridge's principal (raises BadBridgeEvent when the
    package cannot be a modelgate version: no group, a group name modelgate cannot take, no artifact)."""
    if not package.group or package.version is None:
        raise BadBridgeEvent(f"{package.arn} is an unversioned model package (in no model package group); "
                             "the bridge registers versioned packages only")
    if not re.fullmatch(GROUP_NAME, package.group):
        raise BadBridgeEvent(f"model package group {package.group!r} is not a modelgate group name "
                             "(1 to 200 letters, digits, '.', '_' or '-')")
    if not package.artifact_uri:
        raise BadBridgeEvent(f"{package.arn} has no ModelDataUrl in its InferenceSpecification.Containers: "
                             "nothing to deploy")
    first = next(c for c in package.containers if c.model_data_url)
    try:
        return Registration(
            artifact_uri=package.artifact_uri,
            registered_by=SAGEMAKER_BRIDGE_PRINCIPAL,
            source="sagemaker",
            framework=first.framework.lower() if first.framework else None,
            metrics=metrics,
            description=(package.description or f"SageMaker model package {package.group} {package.version}")[:4000],
            metadata={"sagemaker": {
                "containers": [c.model_dump(exclude_none=True) for c in package.containers],
                "approval_status_at_registration": package.approval_status,
                "created_by": package.created_by,
                "customer_metadata": package.customer_metadata,
            }},
            model_card=_card(package.model_card),
            lineage=lineage_of(package),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise BadBridgeEvent(f"{package.arn} cannot be registered as it is: {problems}") from None
