"""The catalog's domain logic: model groups, registering versions, and reflecting their journey."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.registrar.models import (
    ApprovalStatus,
    HistoryEntry,
    IdempotencyKey,
    ModelGroup,
    ModelVersion,
    StageStatus,
    VersionMetric,
    VersionStage,
    VersionTag,
    VersionWord,
)
from services.registrar.search import words
from shared.db import UnitOfWork
from shared.events import (
    Container,
    Envelope,
    ModelRegistered,
    ModelRegisteredPayload,
    model_version_id,
    utcnow,
)
from shared.limits import LIMITS, JsonMap, Name, TagValue, Text, counted, json_problem
from shared.pins import Pin

GROUP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
GROUP_NAME_RULE = "a group name is 1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit"


#: The largest integer a metric may be: beyond it, it is not a float (math.isfinite would overflow).
FLOAT_MAX = int(sys.float_info.max)

Tags = Annotated[dict[Annotated[Name, Field(min_length=1)], TagValue], counted("max_tags", "tags")]
Owners = Annotated[list[Name], counted("max_owners", "owners")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dataset(BaseModel):
    """A dataset a version was trained or evaluated on (Comet's dataset artifacts carry the same fields)."""

    model_config = ConfigDict(extra="allow")
    name: Name = Field(min_length=1, examples=["transactions"])
    version: Name | None = Field(None, examples=["3"])
    aliases: Annotated[list[Name], counted("max_map_keys", "aliases")] = Field(default_factory=list, examples=[["preprocessed"]])
    uri: Text | None = Field(None, examples=["s3://datalake/transactions/v3/"])

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class Lineage(BaseModel):
    """Where a version comes from. Other keys (e.g. `comet`, the whole experiment summary) are kept as sent."""

    model_config = ConfigDict(extra="allow")
    experiment_key: Name | None = Field(None, description="Comet (or other tracker) experiment key.")
    datasets: Annotated[list[Dataset], counted("max_datasets", "datasets")] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _experiment_key_from_comet(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("experiment_key") and isinstance(data.get("comet"), dict):
            return {**data, "experiment_key": data["comet"].get("experiment_key")}
        return data


class ModelCard(BaseModel):
    """The fields of a SageMaker Model Card that approvers and auditors read; other keys (such as the
    `plots` of a Comet experiment) are kept as sent."""

    model_config = ConfigDict(extra="allow")
    summary: Text | None = Field(None, description="What the model does, in a sentence.")
    intended_use: Text | None = Field(None, description="Intended uses, and uses it is not meant for.")
    limitations: Text | None = Field(None, description="Known limitations, caveats and recommendations.")
    training_data: Text | None = Field(None, description="What it was trained on.")
    evaluation: Text | None = Field(None, description="How it was evaluated and what was observed.")
    risk_rating: Literal["High", "Medium", "Low", "Unknown"] | None = None
    risk_rating_explanation: Text | None = None
    ethical_considerations: Text | None = None


#: SageMaker's rule for a container's hostname, which a step's name becomes.
STEP_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


class ContainerStep(Strict):
    """One step of an inference pipeline: run in order, each step's output the next one's input."""

    name: str = Field(pattern=STEP_NAME, description="Letters, digits and hyphens, at most 63 (SageMaker's ContainerHostname).",
                      examples=["scaler"])
    artifact_uri: Text = Field(min_length=1, examples=["s3://modelgate-artifacts/fraud/scaler.skops"])
    image: str | None = Field(None, min_length=1, max_length=255,
                              description="Its serving image; default the deployer's (MODELGATE_SAGEMAKER_IMAGE_URI).")
    environment: Annotated[dict[Annotated[str, Field(min_length=1, max_length=1024)], Annotated[str, Field(max_length=1024)]],
                           counted("max_container_environment", "environment variables")] = Field(default_factory=dict)


class Registration(Strict):
    """What a client sends to register a version."""

    artifact_uri: Text = Field(min_length=1, examples=["s3://modelgate-artifacts/fraud/model.ubj"])
    registered_by: str | None = Field(
        None, min_length=1, max_length=200,
        description="Optional: the caller's own name (the credential's principal is the registrant).",
        examples=["ana@example.com"],
    )
    metrics: Annotated[dict[str, float], counted("max_metrics", "metrics")] = Field(
        default_factory=dict, examples=[{"auc": 0.93, "recall": 0.81}])
    params: JsonMap = Field(default_factory=dict, examples=[{"max_depth": 6}])
    tags: Tags = Field(default_factory=dict, examples=[{"team": "risk"}])
    framework: str | None = Field(None, max_length=80, examples=["xgboost"])
    source: Literal["manual", "comet", "sagemaker"] = "manual"
    description: Text = ""
    metadata: JsonMap = Field(default_factory=dict, description="Free-form; stored as sent.")
    model_card: ModelCard = Field(default_factory=ModelCard)
    lineage: Lineage = Field(default_factory=Lineage)
    containers: Annotated[list[ContainerStep], counted("max_containers", "containers")] = Field(
        default_factory=list,
        description="Optional: an inference pipeline, its steps in order (e.g. a scaler, then the model); the last "
        "step is the model, its artifact_uri the version's. Every step's artifact is pinned like the version's.",
        examples=[[{"name": "scaler", "artifact_uri": "s3://modelgate-artifacts/fraud/scaler.skops"},
                   {"name": "model", "artifact_uri": "s3://modelgate-artifacts/fraud/model.ubj"}]],
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "artifact_uri": "s3://modelgate-artifacts/fraud/model.ubj",
                    "registered_by": "ana@example.com",
                    "framework": "xgboost",
                    "metrics": {"auc": 0.93, "precision": 0.88, "recall": 0.81},
                    "params": {"max_depth": 6, "eta": 0.15},
                    "tags": {"team": "risk"},
                    "description": "Weekly retrain on October transactions",
                    "model_card": {
                        "summary": "Scores card transactions for fraud",
                        "intended_use": "Flag transactions for review; not for automatic blocking",
                        "limitations": "Not evaluated on business accounts",
                        "training_data": "transactions v3, Jan-Sep",
                        "evaluation": "Holdout October: auc 0.93",
                        "risk_rating": "Medium",
                    },
                    "lineage": {
                        "experiment_key": "4f1c9a2e",
                        "datasets": [
                            {"name": "transactions", "version": "3", "aliases": ["preprocessed"], "uri": "s3://datalake/tx/v3/"}
                        ],
                    },
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _pipeline_ends_with_the_model(self) -> Registration:
        if not self.containers:
            return self
        names = [c.name for c in self.containers]
        if len(set(names)) != len(names):
            raise ValueError(f"containers: each step needs its own name, got {names}")
        if self.containers[-1].artifact_uri != self.artifact_uri:
            raise ValueError(f"containers: the last step is the model: its artifact_uri "
                             f"({self.containers[-1].artifact_uri}) must be the version's artifact_uri ({self.artifact_uri})")
        return self

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_are_numbers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, number in value.items():
                if isinstance(number, bool) or not isinstance(number, int | float):
                    raise ValueError(f"metric {name!r} must be a number, got {number!r}")  # noqa: TRY004 (pydantic wants ValueError)
                if isinstance(number, int) and abs(number) > FLOAT_MAX:
                    raise ValueError(f"metric {name!r} is too large for a float (at most about 1.8e308)")
                if not math.isfinite(number):
                    raise ValueError(f"metric {name!r} must be a finite number, got {number!r}")
                if not 1 <= len(str(name)) <= LIMITS.max_name_length:
                    raise ValueError(LIMITS.breach("max_name_length", f"metric name of {len(str(name))} characters", "use a name of 1 or more characters, within the limit"))
        return value

    @model_validator(mode="before")
    @classmethod
    def _card_and_lineage_fit(cls, data: Any) -> Any:
        """The model card and lineage keep keys they do not know: those obey the free-form JSON limits."""
        if isinstance(data, dict):
            for field in ("model_card", "lineage"):
                if (problem := json_problem(data.get(field))) is not None:
                    raise ValueError(f"{field}: {problem}")
        return data

    def fingerprint(self, group: str) -> str:
        """Identifies the request body, to tell a retry from a different request under the same key."""
        unset = {"containers"} if not self.containers else None  # a key used before pipelines existed still matches
        body = json.dumps({"group": group, **self.model_dump(mode="json", exclude=unset)}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


class GroupIn(Strict):
    name: str = Field(pattern=GROUP_NAME, examples=["fraud-detector"])
    description: Text = Field("", examples=["Card fraud scoring"])
    tags: Tags = Field(default_factory=dict, examples=[{"team": "risk"}])
    owners: Owners = Field(default_factory=list, examples=[["ana@example.com"]])
    team: str | None = Field(None, max_length=100, description="The owning team (default: the caller's first team).")
    shared_with: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=100, description='Teams that may read it; "*" for every team.')


class GroupChange(Strict):
    """Only the fields sent change."""

    description: Text | None = None
    tags: Tags | None = None
    owners: Owners | None = None
    shared_with: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)


class UnknownGroup(LookupError):
    def __str__(self) -> str:
        return f"model group '{self.args[0]}' does not exist; create it first (POST /v1/groups)"


class GroupExists(ValueError):
    def __str__(self) -> str:
        return f"model group '{self.args[0]}' already exists; change it with PATCH /v1/groups/{self.args[0]}"


class IdempotencyConflict(ValueError):
    def __str__(self) -> str:
        return (
            f"Idempotency-Key '{self.args[0]}' was already used for a different registration by you (keys are per caller); "
            "send a new key for a new registration"
        )


# ---------------------------------------------------------------- groups


async def create_group(session: AsyncSession, new: GroupIn) -> ModelGroup:
    if await session.get(ModelGroup, new.name) is not None:
        raise GroupExists(new.name)
    group = ModelGroup(name=new.name, description=new.description, tags=new.tags, owners=new.owners, team=new.team,
                       shared_with=new.shared_with)
    session.add(group)
    try:
        await session.flush()
    except IntegrityError:  # created by someone else meanwhile
        raise GroupExists(new.name) from None
    return group


async def change_group(session: AsyncSession, name: str, change: GroupChange) -> ModelGroup:
    group = await session.get(ModelGroup, name, with_for_update=True)
    if group is None:
        raise UnknownGroup(name)
    for field, value in change.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(group, field, value)
    group.updated_at = utcnow()
    return group


# ---------------------------------------------------------------- registering


async def register(
    uow: UnitOfWork,
    group: str,
    reg: Registration,
    auto_create_group: bool = True,
    idempotency_key: str | None = None,
    team: str | None = None,
    pin: Pin | None = None,
    step_pins: list[Pin | None] | None = None,
) -> ModelVersion:
    """Adds the next version of `group` (a new group gets `team`) with its artifact's `pin` (digest and S3
    VersionId, taken by the caller), records it in its history and announces it; the caller commits.
    An inference pipeline's steps (`reg.containers`) are recorded with `step_pins`, one per step, in order.
    `reg.registered_by` is the caller's principal (set by access.py), who owns the idempotency key: one it
    already used for the same body returns that version and changes nothing."""
    session = uow.session
    if idempotency_key:
        previous = await _replay(session, reg.registered_by, idempotency_key, reg.fingerprint(group))
        if previous is not None:
            return previous
    number = await _next_version(session, group, auto_create_group, team)
    version = ModelVersion(
        id=model_version_id(group, number),
        group_name=group,
        version=number,
        artifact_uri=reg.artifact_uri,
        artifact_digest=pin.digest if pin else None,
        artifact_version_id=pin.version_id if pin else None,
        containers=pinned_steps(reg.containers, step_pins),
        registered_by=reg.registered_by,
        source=reg.source,
        framework=reg.framework,
        params=reg.params,
        description=reg.description,
        meta=reg.metadata,
        model_card=reg.model_card.model_dump(exclude_defaults=True),
        lineage=reg.lineage.model_dump(mode="json", exclude_none=True),
        metrics=reg.metrics,
        tags=reg.tags,
        stages={},
        metric_rows=[VersionMetric(name=k, value=v) for k, v in reg.metrics.items()],
        tag_rows=[VersionTag(key=k, value=v) for k, v in reg.tags.items()],
        word_rows=[VersionWord(word=w) for w in words(f"{group} {reg.description}")],
    )
    session.add(version)
    if idempotency_key:
        session.add(IdempotencyKey(principal=reg.registered_by, key=idempotency_key, request_hash=reg.fingerprint(group), version=version))
    event = _registered(version, reg)
    record_history(uow, event)
    uow.publish(event)
    return version


def _registered(version: ModelVersion, reg: Registration) -> ModelRegistered:
    return ModelRegistered(
        producer="registrar",
        correlation_id=version.id,
        payload=ModelRegisteredPayload(
            group=version.group_name,
            version=version.version,
            model_version_id=version.id,
            artifact_uri=reg.artifact_uri,
            registered_by=reg.registered_by,
            source=reg.source,
            framework=reg.framework,
            metrics=reg.metrics,
            tags=reg.tags,
            lineage=version.lineage,
            model_card_summary=reg.model_card.summary or reg.model_card.intended_use,
            artifact_digest=version.artifact_digest,
            artifact_version_id=version.artifact_version_id,
            containers=[Container.model_validate(c) for c in version.containers or []],
        ),
    )


def pinned_steps(steps: list[ContainerStep], pins: list[Pin | None] | None) -> list[dict[str, Any]]:
    """The pipeline's steps as recorded (and announced): each with its pin (digest and S3 VersionId)."""
    pins = pins or [None] * len(steps)
    return [
        {**step.model_dump(exclude_none=True), "artifact_digest": pin.digest if pin else None,
         "artifact_version_id": pin.version_id if pin else None}
        for step, pin in zip(steps, pins, strict=True)
    ]


async def _replay(session: AsyncSession, principal: str | None, key: str, fingerprint: str) -> ModelVersion | None:
    """The version `principal` already registered with `key` (another principal's key is not looked at)."""
    used = await session.get(IdempotencyKey, (principal, key))
    if used is None:
        return None
    if used.request_hash != fingerprint:
        raise IdempotencyConflict(key)
    return await session.get(ModelVersion, used.model_version_id)


async def _next_version(session: AsyncSession, group: str, auto_create_group: bool, team: str | None = None) -> int:
    """Takes the group's next number. The row stays locked until commit, and a rollback gives it back,
    so concurrent registrations (from any number of processes) get consecutive numbers."""
    bump = (
        update(ModelGroup)
        .where(ModelGroup.name == group)
        .values(latest_version=ModelGroup.latest_version + 1)
        .returning(ModelGroup.latest_version)
        .execution_options(synchronize_session=False)
    )
    number = await session.scalar(bump)
    if number is None:
        if not auto_create_group:
            raise UnknownGroup(group)
        insert = postgresql_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        now = utcnow()
        await session.execute(
            insert(ModelGroup)
            .values(name=group, description="", tags={}, owners=[], latest_version=0, created_at=now, updated_at=now,
                    team=team, shared_with=[])
            .on_conflict_do_nothing(index_elements=["name"])
        )
        number = await session.scalar(bump)
    return number


# ---------------------------------------------------------------- the journey


def record_history(uow: UnitOfWork, event: Envelope) -> None:
    uow.session.add(
        HistoryEntry(
            model_version_id=event.correlation_id,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            producer=event.producer,
            payload=event.payload.model_dump(mode="json"),
        )
    )


async def set_stage(
    session: AsyncSession, version: ModelVersion, stage: str, status: StageStatus, event: Envelope, **details: Any
) -> bool:
    """Moves a stage to `status` unless a later event already moved it: events may arrive out of order, and
    twice. Which approval and which deployment the stage is about (approval_id, decided_by, deployment_id)
    carry over to the next status unless `details` name new ones. Returns whether the stage changed."""
    current = version.stages.get(stage)
    new = {"status": status, "at": event.occurred_at.isoformat(), "producer": event.producer, **details}
    if current and _stays(current, new):
        return False
    carried = {k: current[k] for k in CARRIED if current and k in current and k not in details}
    version.stages = {**version.stages, stage: {**new, **carried}}
    version.approval_status = approval_status(version.stages)
    await session.merge(VersionStage(version_id=version.id, stage=stage, status=status))
    return True


CARRIED = ("approval_id", "decided_by", "deployment_id")

#: How far along its way through a stage each status is (a deployer's Superseded: see _progress).
PROGRESS = {
    StageStatus.PENDING_APPROVAL: 0, StageStatus.APPROVED: 1, StageStatus.REJECTED: 1, StageStatus.SUPERSEDED: 1,
    StageStatus.DEPLOYING: 2, StageStatus.DEPLOYED: 3, StageStatus.DEPLOYMENT_FAILED: 3,
    StageStatus.RETIRED: 4, StageStatus.ROLLED_BACK: 4,
}


def _progress(entry: dict[str, Any]) -> int:
    if entry["status"] == StageStatus.SUPERSEDED and entry.get("deployment_id"):
        return PROGRESS[StageStatus.DEPLOYED]  # its deployment ended before it started
    return PROGRESS.get(entry["status"], 0)


def _stays(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the stage's current entry is newer news than `new`. Clocks are only compared when the order
    is not known otherwise: a version's approval precedes its deployments, and one deployment's own events
    go Deploying -> Deployed, DeploymentFailed or Superseded -> Retired or RolledBack."""
    if current.get("producer") == "deployer" and new["producer"] == "approver":
        return True  # an approval is decided once per (version, stage), always before the deployer acts on it
    same_deployment = current.get("deployment_id") is not None and current.get("deployment_id") == new.get("deployment_id")
    if same_deployment and _progress(current) != _progress(new):
        return _progress(current) > _progress(new)
    at, new_at = datetime.fromisoformat(current["at"]), datetime.fromisoformat(new["at"])
    if at != new_at:
        return at > new_at
    return _progress(current) >= _progress(new)  # the same instant: the one further along (or the first) stays


#: Stage statuses that say the version was approved for that stage.
APPROVED_STATUSES = frozenset({
    StageStatus.APPROVED, StageStatus.DEPLOYING, StageStatus.DEPLOYED, StageStatus.DEPLOYMENT_FAILED,
    StageStatus.RETIRED, StageStatus.ROLLED_BACK,
})


def approval_status(stages: dict[str, dict[str, Any]]) -> ApprovalStatus:
    """SageMaker's single status, derived from the stages: any rejection wins, then any approval (a version
    superseded after its approval, by the deployer, was approved); a version superseded before any approval
    will go no further, so it reads as rejected."""
    statuses = {s["status"] for s in stages.values()}
    if StageStatus.REJECTED in statuses:
        return ApprovalStatus.REJECTED
    if any(s["status"] in APPROVED_STATUSES or (s["status"] == StageStatus.SUPERSEDED and s.get("deployment_id"))
           for s in stages.values()):
        return ApprovalStatus.APPROVED
    if StageStatus.SUPERSEDED in statuses:
        return ApprovalStatus.REJECTED
    return ApprovalStatus.PENDING_MANUAL_APPROVAL
