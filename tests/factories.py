"""Ready-made events for tests."""

from __future__ import annotations

from shared.events import (
    ApprovalDecided,
    ApprovalDecidedPayload,
    ApprovalRequested,
    ApprovalRequestedPayload,
    Deployed,
    DeployedPayload,
    DeploymentFailed,
    DeploymentFailedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    DeploymentSuperseded,
    DeploymentSupersededPayload,
    Envelope,
    MetricCheck,
    ModelRegistered,
    ModelRegisteredPayload,
    RolloutPromoted,
    RolloutPromotedPayload,
    RolloutRolledBack,
    RolloutRolledBackPayload,
    RolloutStepped,
    RolloutSteppedPayload,
    utcnow,
)


def ref(group: str = "fraud", version: int = 1) -> dict:
    return {"group": group, "version": version, "model_version_id": f"{group}/{version}"}


#: An artifact pin as the registrar records it (shared/pins.py).
PIN = {"artifact_digest": "sha256:" + "ab" * 32, "artifact_version_id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"}


def model_registered(
    group: str = "fraud", version: int = 1, auc: float = 0.91, by: str = "ana", **pin: str | None
) -> ModelRegistered:
    return ModelRegistered(
        producer="registrar",
        correlation_id=f"{group}/{version}",
        payload=ModelRegisteredPayload(
            **ref(group, version), artifact_uri="s3://b/model.bin", registered_by=by, metrics={"auc": auc}, **pin
        ),
    )


def approval_decided(
    group: str = "fraud", version: int = 1, stage: str = "dev", decision: str = "Approved", approval_id: str = "a1",
    artifact_uri: str = "s3://b/model.bin", **pin: str | None,
) -> ApprovalDecided:
    return ApprovalDecided(
        producer="approver",
        correlation_id=f"{group}/{version}",
        payload=ApprovalDecidedPayload(
            **ref(group, version),
            approval_id=approval_id,
            stage=stage,
            decision=decision,
            decided_by=["policy"],
            automatic=True,
            policy_rule="dev: automatic when auc >= 0.8",
            artifact_uri=artifact_uri,
            **pin,
        ),
    )


def deployment_started(
    group: str = "fraud", version: int = 1, deployment_id: str = "d1", stage: str = "dev", approval_id: str | None = "a1",
    rollback: bool = False,
) -> DeploymentStarted:
    return DeploymentStarted(
        producer="deployer",
        correlation_id=f"{group}/{version}",
        payload=DeploymentStartedPayload(
            **ref(group, version), deployment_id=deployment_id, stage=stage, target="parameter-store",
            artifact_uri="s3://b/model.bin", approval_id=None if rollback else approval_id, rollback=rollback,
            started_at=utcnow(),
        ),
    )


def deployment_superseded(
    group: str = "fraud", version: int = 1, by: int = 2, deployment_id: str = "d1", stage: str = "dev",
    approval_id: str | None = "a1", rollback: bool = False,
) -> DeploymentSuperseded:
    return DeploymentSuperseded(
        producer="deployer",
        correlation_id=f"{group}/{version}",
        payload=DeploymentSupersededPayload(
            **ref(group, version), deployment_id=deployment_id, stage=stage, superseded_by=f"{group}/{by}",
            superseded_by_version=by, approval_id=approval_id, rollback=rollback,
            reason=f"superseded: {group}/{by} was approved for {stage} and is newer",
        ),
    )


def deployed(
    group: str = "fraud", version: int = 1, deployment_id: str = "d1", stage: str = "dev", previous: int | None = None,
    rollback: bool = False,
) -> Deployed:
    return Deployed(
        producer="deployer",
        correlation_id=f"{group}/{version}",
        payload=DeployedPayload(
            **ref(group, version), deployment_id=deployment_id, stage=stage, target="parameter-store",
            artifact_uri="s3://b/model.bin", parameter_name=f"/modelgate/{group}/{stage}/current",
            previous_model_version_id=f"{group}/{previous}" if previous else None, previous_version=previous,
            rollback=rollback, deployed_at=utcnow(),
        ),
    )


def sample_events() -> list[Envelope]:
    now = utcnow()
    return [
        model_registered(**PIN),
        ApprovalRequested(
            producer="approver",
            correlation_id="fraud/1",
            payload=ApprovalRequestedPayload(
                **ref(),
                approval_id="a2",
                stage="test",
                registered_by="ana",
                artifact_uri="s3://b/model.bin",
                policy_rule="test: 1 approver",
                required_approvals=1,
                checks=[MetricCheck(metric="auc", op=">=", threshold=0.8, value=0.91, passed=True)],
                expires_at=now,
                **PIN,
            ),
        ),
        approval_decided(**PIN),
        Deployed(
            producer="deployer",
            correlation_id="fraud/1",
            payload=DeployedPayload(
                **ref(),
                deployment_id="d1",
                stage="dev",
                target="parameter-store",
                artifact_uri="s3://b/model.bin",
                parameter_name="/modelgate/fraud/dev/current",
                deployed_at=now,
                **PIN,
            ),
        ),
        DeploymentFailed(
            producer="deployer",
            correlation_id="fraud/1",
            payload=DeploymentFailedPayload(**ref(), deployment_id="d2", stage="dev", target="local", reason="boom", attempts=3),
        ),
        deployment_started(),
        deployment_superseded(),
        RolloutStepped(producer="deployer", correlation_id="fraud/1", payload=RolloutSteppedPayload(
            **ref(), deployment_id="d1", stage="dev", target="local", strategy="canary", status="Baking",
            step=1, steps=2, share=10.0, live_model_version_id="fraud/0", at=now)),
        RolloutPromoted(producer="deployer", correlation_id="fraud/1", payload=RolloutPromotedPayload(
            **ref(), deployment_id="d1", stage="dev", strategy="canary", live_model_version_id="fraud/0", at=now)),
        RolloutRolledBack(producer="deployer", correlation_id="fraud/1", payload=RolloutRolledBackPayload(
            **ref(), deployment_id="d1", stage="dev", strategy="canary", status="RolledBack", reason="error_rate 0.2 > 0.05",
            breached=["error_rate"], at=now)),
    ]
