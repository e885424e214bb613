"""The events modelgate's services exchange, each inside the same envelope.

Producers build events in code: an unknown field is a bug and raises. Consumers parse JSON from the bus:
unknown fields are ignored, so a newer producer never breaks an older consumer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, model_validator

Producer = Literal["registrar", "approver", "deployer", "notifier"]
ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
Decision = Literal["Approved", "Rejected"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Model(BaseModel):
    """Tolerant when parsed (extra fields ignored), strict when constructed in code (extra fields refused)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not (info.context or {}).get("tolerant"):
            unknown = set(data) - set(cls.model_fields)
            if unknown:
                raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        return data


class VersionRef(Model):
    """Which model version an event is about."""

    group: str
    version: int
    model_version_id: str


class MetricCheck(Model):
    metric: str
    op: Literal[">=", ">", "<=", "<", "=="]
    threshold: float  # for a rule relative to the live version, the number it came to (shared/thresholds.py)
    value: float | None
    passed: bool
    rule: str | None = None  # the rule as the policy says it, when it is relative to live: ">= live + 0.002"
    live_value: float | None = None  # the live version's value it was relative to
    live_model_version_id: str | None = None


RolloutStrategy = Literal["all-at-once", "canary", "linear", "shadow"]


class GuardrailSpec(Model):
    """What a rollout watches during each bake (services/deployer/guardrails.py), every `interval_seconds`.

    `rules`: guardrail -> threshold rule (shared/thresholds.py), absolute or relative to the live version:
    error_rate, latency_p99_ms, psi, disagreement, and delayed-label metrics (auc, recall, precision,
    accuracy) once `min_labels` outcomes were fed back."""

    interval_seconds: float
    rules: dict[str, str] = {}
    min_requests: int = 20  # the new version's requests a step needs before it is judged and may end
    min_labels: int = 20


class RolloutSpec(Model):
    """How a stage's new version goes live, from the stage's policy (carried on ApprovalDecided)."""

    strategy: RolloutStrategy
    steps: list[float] = []  # traffic share (%) of each step before 100 %; for shadow: the mirrored share
    bake_seconds: float = 0  # how long each step bakes
    guardrails: GuardrailSpec | None = None


class Container(Model):
    """One step of an inference pipeline (SageMaker's Containers=[...], run in order, Serial): its artifact
    pinned like the version's (shared/pins.py), and optionally its own serving image and environment."""

    name: str
    artifact_uri: str
    image: str | None = None  # None: the deployer's serving image
    environment: dict[str, str] = {}
    artifact_digest: str | None = None  # sha256:<hex> of the step's artifact at registration
    artifact_version_id: str | None = None  # its S3 VersionId


class ModelRegisteredPayload(VersionRef):
    artifact_uri: str
    registered_by: str
    source: str = "manual"
    framework: str | None = None
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    lineage: dict[str, Any] = {}
    model_card_summary: str | None = None
    artifact_digest: str | None = None  # sha256:<hex> of the artifact at registration (shared/pins.py)
    artifact_version_id: str | None = None  # its S3 VersionId
    containers: list[Container] = []  # an inference pipeline's steps, in order (the last one the model); [] one model


class ApprovalRequestedPayload(VersionRef):
    approval_id: str
    stage: str
    registered_by: str
    artifact_uri: str
    policy_rule: str
    required_approvals: int
    approver_group: str | None = None
    checks: list[MetricCheck] = []
    metrics: dict[str, float] = {}
    live_model_version_id: str | None = None
    model_card_summary: str | None = None
    lineage: dict[str, Any] = {}
    expires_at: AwareDatetime | None = None
    decide_url: str | None = None
    decide_command: str | None = None
    console_url: str | None = None
    approved_by: list[str] = []  # approvals so far (a stage may need several)
    escalated: bool = False  # asked again, now of approver_group, after escalated_from_group let it expire
    escalated_from_group: str | None = None
    supersedes: list[str] = []  # versions whose pending request for this stage this one closed
    artifact_digest: str | None = None  # sha256:<hex> of the artifact at registration (shared/pins.py)
    artifact_version_id: str | None = None  # its S3 VersionId


class ApprovalDecidedPayload(VersionRef):
    approval_id: str
    stage: str
    decision: Decision
    decided_by: list[str]
    automatic: bool
    policy_rule: str
    artifact_uri: str
    comment: str | None = None
    rollback: bool = False
    expired: bool = False  # rejected because nobody decided in time
    superseded_by: str | None = None  # rejected because this newer version was asked about the stage
    artifact_digest: str | None = None  # sha256:<hex> of the artifact at registration (shared/pins.py)
    artifact_version_id: str | None = None  # its S3 VersionId
    containers: list[Container] = []  # an inference pipeline's steps, in order (ModelRegistered.containers)
    rollout: RolloutSpec | None = None  # how the stage takes the version (None: all at once), from the policy


class DeployedPayload(VersionRef):
    deployment_id: str
    stage: str
    target: str
    artifact_uri: str
    parameter_name: str
    endpoint_url: str | None = None
    previous_model_version_id: str | None = None
    previous_version: int | None = None
    rollback: bool = False
    deployed_at: AwareDatetime
    artifact_digest: str | None = None  # sha256:<hex> of the artifact at registration (shared/pins.py)
    artifact_version_id: str | None = None  # its S3 VersionId
    containers: list[Container] = []  # the inference pipeline's steps it serves, in order
    account: str | None = None  # the AWS account of the stage's pointer and target; None: the deployer's own


class DeploymentFailedPayload(VersionRef):
    deployment_id: str
    stage: str
    target: str
    reason: str
    attempts: int
    account: str | None = None  # the AWS account of the stage's pointer and target; None: the deployer's own


class DeploymentStartedPayload(VersionRef):
    """The deployer took the deployment up: the stage's target is being brought to this version."""

    deployment_id: str
    stage: str
    target: str
    artifact_uri: str
    approval_id: str | None = None  # None for a rollback
    rollback: bool = False
    started_at: AwareDatetime
    account: str | None = None  # the AWS account of the stage's pointer and target; None: the deployer's own


class DeploymentSupersededPayload(VersionRef):
    """An approved version that will never serve the stage: a newer one took it first (its deployment never ran)."""

    deployment_id: str
    stage: str
    superseded_by: str  # the winner's model_version_id
    superseded_by_version: int
    approval_id: str | None = None  # None for a rollback
    rollback: bool = False  # a rollback overtaken by a newer approval
    reason: str


class RolloutStatus(StrEnum):
    """Where a rollout stands (stored by the deployer, carried on the rollout events)."""

    BAKING = "Baking"  # the new version takes its step's share (or mirror) while the guardrails watch
    PAUSED = "Paused"  # an operator paused it: the share stays, no step ends, the guardrails still watch
    PROMOTED = "Promoted"  # it serves 100 %: Deployed follows in the same transaction
    ROLLED_BACK = "RolledBack"  # a guardrail broke: the live version serves 100 % again
    ABORTED = "Aborted"  # an operator aborted it: the live version serves 100 % again


class RolloutSteppedPayload(VersionRef):
    """A rollout began a step, or was paused or resumed: the new version now takes `share` % of the traffic
    (split) or gets a mirror of it (shadow, `mirror`), while `live_model_version_id` answers the rest."""

    deployment_id: str
    stage: str
    target: str
    strategy: RolloutStrategy
    status: RolloutStatus
    step: int  # 1-based
    steps: int
    share: float
    mirror: bool = False
    live_model_version_id: str | None = None
    router_url: str | None = None
    reason: str | None = None
    at: AwareDatetime


class RolloutPromotedPayload(VersionRef):
    """Every step baked with its guardrails holding: the new version serves 100 % (Deployed follows)."""

    deployment_id: str
    stage: str
    strategy: RolloutStrategy
    live_model_version_id: str | None = None  # what it replaced
    evaluation: dict[str, float | None] = {}  # the guardrails' last values
    at: AwareDatetime


class RolloutRolledBackPayload(VersionRef):
    """A guardrail broke (RolledBack) or an operator aborted (Aborted): the live version serves 100 % again
    and the new version's server is retired. The stage's pointer never moved."""

    deployment_id: str
    stage: str
    strategy: RolloutStrategy
    status: RolloutStatus
    reason: str
    breached: list[str] = []  # the guardrails that broke
    evaluation: dict[str, float | None] = {}
    share: float = 0  # the share the new version had
    step: int = 0
    live_model_version_id: str | None = None
    by: str | None = None  # the operator, for an abort
    at: AwareDatetime


E = TypeVar("E", bound="Envelope")


class Signature(Model):
    """The producer's Ed25519 signature over the rest of the envelope (shared.signing), and its key's id."""

    key_id: str
    value: str


class Envelope(Model):
    event_type: str
    event_id: str = Field(default_factory=new_id)
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    producer: Producer
    correlation_id: str
    causation_id: str | None = None
    signature: Signature | None = None  # added by the publisher; consumers refuse an event without a valid one

    def caused(self, event_cls: type[E], producer: Producer, payload: Any) -> E:
        """A new event of the same journey, caused by this one."""
        return event_cls(
            producer=producer,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            payload=payload,
        )


class ModelRegistered(Envelope):
    event_type: Literal["ModelRegistered"] = "ModelRegistered"
    payload: ModelRegisteredPayload


class ApprovalRequested(Envelope):
    event_type: Literal["ApprovalRequested"] = "ApprovalRequested"
    payload: ApprovalRequestedPayload


class ApprovalDecided(Envelope):
    event_type: Literal["ApprovalDecided"] = "ApprovalDecided"
    payload: ApprovalDecidedPayload


class Deployed(Envelope):
    event_type: Literal["Deployed"] = "Deployed"
    payload: DeployedPayload


class DeploymentFailed(Envelope):
    event_type: Literal["DeploymentFailed"] = "DeploymentFailed"
    payload: DeploymentFailedPayload


class DeploymentStarted(Envelope):
    event_type: Literal["DeploymentStarted"] = "DeploymentStarted"
    payload: DeploymentStartedPayload


class DeploymentSuperseded(Envelope):
    event_type: Literal["DeploymentSuperseded"] = "DeploymentSuperseded"
    payload: DeploymentSupersededPayload


class RolloutStepped(Envelope):
    event_type: Literal["RolloutStepped"] = "RolloutStepped"
    payload: RolloutSteppedPayload


class RolloutPromoted(Envelope):
    event_type: Literal["RolloutPromoted"] = "RolloutPromoted"
    payload: RolloutPromotedPayload


class RolloutRolledBack(Envelope):
    event_type: Literal["RolloutRolledBack"] = "RolloutRolledBack"
    payload: RolloutRolledBackPayload


Event = Annotated[
    ModelRegistered | ApprovalRequested | ApprovalDecided | Deployed | DeploymentFailed | DeploymentStarted
    | DeploymentSuperseded | RolloutStepped | RolloutPromoted | RolloutRolledBack,
    Field(discriminator="event_type"),
]

EVENT_CLASSES: dict[str, type[Envelope]] = {
    cls.__name__: cls
    for cls in (
        ModelRegistered, ApprovalRequested, ApprovalDecided, Deployed, DeploymentFailed, DeploymentStarted,
        DeploymentSuperseded, RolloutStepped, RolloutPromoted, RolloutRolledBack,
    )
}
_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(body: str | bytes) -> Envelope:
    """Parse one event from its JSON; raises pydantic.ValidationError when it is not a known, valid event."""
    return _adapter.validate_json(body, context={"tolerant": True})


def model_version_id(group: str, version: int) -> str:
    return f"{group}/{version}"
