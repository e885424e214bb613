"""The SageMaker Model Registry bridge, outbound: reflect a bridged version's decisions and deployments on its
model package, so SageMaker Studio shows what modelgate decided.

Only versions the bridge registered (a `sagemaker_packages` link) are written back, and only to that
package. The handlers record a row (services/registrar/writebacks.py) and the write-back worker calls
`SageMakerWriteback.apply`, which writes the version's *current* state, whatever the row's event was: rows
done late, twice or out of order all end in the same package state. The mapping (docs/sagemaker.md):

- ModelApprovalStatus: the version's approval status, already in SageMaker's names (catalog.approval_status):
  Rejected when any stage was rejected, else Approved when any stage was approved (deploying, deployed,
  retired and rolled back count: they were approved), else PendingManualApproval.
- ModelLifeCycle: Stage = the stage where the version's journey moved last, StageStatus = its modelgate
  status there (PendingApproval, Approved, Rejected, Deploying, Deployed, DeploymentFailed, Superseded,
  Retired, RolledBack), StageDescription = every stage's status, e.g. "fraud/3: dev Deployed; test Approved".
- ApprovalDescription: who decided each stage ("dev Approved by policy; prod Approved by kim, raj").
- CustomerMetadataProperties: `modelgate:model_version_id`, and `modelgate:stage:<stage>` = status per stage.

What is already there is not written again (DescribeModelPackage first), so a write-back done twice changes
nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.registrar.models import ModelVersion

MAX_DESCRIPTION = 1024  # SageMaker's limit on ApprovalDescription and StageDescription
MAX_STAGE = 63  # on ModelLifeCycle.Stage and StageStatus


class SageMakerWritebackError(RuntimeError):
    """SageMaker refused or could not be reached; the worker retries."""


class SageMakerWritebackRefused(ValueError):
    """The package cannot be written (gone, or not the version's): never retried; the message says why."""


def _who(entry: dict[str, Any]) -> str:
    decided = entry.get("decided_by")
    if isinstance(decided, list):
        decided = ", ".join(map(str, decided))
    return f" by {decided}" if decided else ""


def package_update(version: ModelVersion) -> dict[str, Any] | None:
    """UpdateModelPackage's arguments (without the ARN) for the version's state; None before any stage moved."""
    stages = version.stages or {}
    if not stages:
        return None
    last = max(stages, key=lambda s: (datetime.fromisoformat(stages[s]["at"]), s))
    summary = "; ".join(f"{stage} {entry['status']}" for stage, entry in stages.items())
    decisions = "; ".join(f"{stage} {entry['status']}{_who(entry)}" for stage, entry in stages.items())
    return {
        "ModelApprovalStatus": str(version.approval_status),
        "ApprovalDescription": f"modelgate {version.id}: {decisions}"[:MAX_DESCRIPTION],
        "ModelLifeCycle": {
            "Stage": last[:MAX_STAGE],
            "StageStatus": str(stages[last]["status"])[:MAX_STAGE],
            "StageDescription": f"modelgate {version.id}: {summary}"[:MAX_DESCRIPTION],
        },
        "CustomerMetadataProperties": {
            "modelgate:model_version_id": version.id,
            **{f"modelgate:stage:{stage}"[:128]: str(entry["status"]) for stage, entry in stages.items()},
        },
    }


def _differs(described: dict[str, Any], update: dict[str, Any]) -> list[str]:
    changes = []
    for key in ("ModelApprovalStatus", "ApprovalDescription", "ModelLifeCycle"):
        if described.get(key) != update[key]:
            changes.append(key)
    current = described.get("CustomerMetadataProperties") or {}
    if any(current.get(k) != v for k, v in update["CustomerMetadataProperties"].items()):
        changes.append("CustomerMetadataProperties")
    return changes


class SageMakerWriteback:
    def __init__(self, client: Any):
        self.client = client

    async def apply(self, package_arn: str, update: dict[str, Any] | None) -> list[str]:
        """Bring the package to `update` (package_update of the version); returns what changed (nothing when
        it already was)."""
        if update is None:
            return []
        try:
            described = await self.client.describe_model_package(ModelPackageName=package_arn)
            if described.get("ModelPackageArn") != package_arn:
                raise SageMakerWritebackRefused(f"DescribeModelPackage({package_arn}) describes another package")
            changes = _differs(described, update)
            if not changes:
                return []
            if "CustomerMetadataProperties" not in changes:  # some servers replace what is sent: send it all
                changes.append("CustomerMetadataProperties")
            keep = {k: v for k, v in (described.get("CustomerMetadataProperties") or {}).items()
                    if not k.startswith("modelgate:")}
            await self.client.update_model_package(
                ModelPackageArn=package_arn, **{**update, "CustomerMetadataProperties": {**keep, **update["CustomerMetadataProperties"]}})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if "not found" in str(error.get("Message", "")).lower() or error.get("Code") == "ResourceNotFound":
                raise SageMakerWritebackRefused(f"model package {package_arn} is gone: {error.get('Message')}") from None
            raise SageMakerWritebackError(f"UpdateModelPackage({package_arn}) failed: {error.get('Code')}: "
                                          f"{error.get('Message')}") from exc
        except BotoCoreError as exc:
            raise SageMakerWritebackError(f"SageMaker did not answer for {package_arn}: {exc}") from exc
        return changes
