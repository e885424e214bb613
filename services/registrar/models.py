"""The registrar's tables. Schema changes go through a migration (services/registrar/migrations)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db import Base, UTCDateTime
from shared.events import utcnow


class StageStatus(StrEnum):
    """Where a version stands in one stage (the stored and published spelling)."""

    PENDING_APPROVAL = "PendingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"  # a newer version took the stage first: before a decision, or before it deployed
    DEPLOYING = "Deploying"  # approved; the deployer is bringing the stage to it (or rolling back to it)
    DEPLOYED = "Deployed"  # serving the stage now
    DEPLOYMENT_FAILED = "DeploymentFailed"
    RETIRED = "Retired"  # served the stage, then a newer deployment replaced it (replaced_by)
    ROLLED_BACK = "RolledBack"  # the stage was rolled back from this version


#: The statuses a stage settles in: nothing more happens to the version there unless a person acts (a
#: rollback, or a newer version replacing a Deployed one).
END_STATUSES = frozenset({
    StageStatus.REJECTED, StageStatus.SUPERSEDED, StageStatus.DEPLOYED, StageStatus.DEPLOYMENT_FAILED,
    StageStatus.RETIRED, StageStatus.ROLLED_BACK,
})


class ApprovalStatus(StrEnum):
    """SageMaker's single approval status of a version, derived from its stages."""

    PENDING_MANUAL_APPROVAL = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class ModelGroup(Base):
    __tablename__ = "model_groups"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)  # the version counter
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    owners: Mapped[list[str]] = mapped_column(JSON, default=list)
    team: Mapped[str | None] = mapped_column(String(100))  # the team that owns it (services/registrar/access.py)
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)  # teams that may read it; "*": all
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    """A version's record: one row to read. Its metrics, tags and stages are also in the tables below, one
    row each, for search; catalog.py writes both in the same transaction."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("group_name", "version"),
        Index("ix_model_versions_created_at_id", "created_at", "id"),
        Index("ix_model_versions_status_created_at", "approval_status", "created_at", "id"),
        Index("ix_model_versions_group_created_at", "group_name", "created_at", "id"),  # a group's newest first
        Index("ix_model_versions_registered_by", "registered_by"),
    )
    id: Mapped[str] = mapped_column(String(220), primary_key=True)  # "<group>/<version>"
    group_name: Mapped[str] = mapped_column(ForeignKey("model_groups.name"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_digest: Mapped[str | None] = mapped_column(String(80))  # sha256:<hex> (shared/pins.py)
    artifact_version_id: Mapped[str | None] = mapped_column(String(1024))  # its S3 VersionId
    # An inference pipeline's steps in order, each {name, artifact_uri, image?, environment, artifact_digest,
    # artifact_version_id}; [] (or NULL, before pipelines) for a single model.
    containers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)
    registered_by: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(40), default="manual")
    framework: Mapped[str | None] = mapped_column(String(80))
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approval_status: Mapped[str] = mapped_column(String(40), default=ApprovalStatus.PENDING_MANUAL_APPROVAL)
    stages: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)  # stage -> {status, at, ...}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    description: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)

    # Written with the version (so that they are inserted after it); read through the JSON columns above.
    metric_rows: Mapped[list[VersionMetric]] = relationship(lazy="raise")
    tag_rows: Mapped[list[VersionTag]] = relationship(lazy="raise")
    word_rows: Mapped[list[VersionWord]] = relationship(lazy="raise")


class VersionMetric(Base):
    __tablename__ = "version_metrics"
    __table_args__ = (Index("ix_version_metrics_name_value", "name", "value", "version_id"),)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float] = mapped_column(Double)


class VersionTag(Base):
    __tablename__ = "version_tags"
    __table_args__ = (Index("ix_version_tags_key_value", "key", "value", "version_id"),)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


class VersionStage(Base):
    """A version's status in one stage (a StageStatus)."""

    __tablename__ = "version_stages"
    __table_args__ = (Index("ix_version_stages_stage_status", "stage", "status", "version_id"),)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(40))


class VersionWord(Base):
    """A word of the version's description or of its group's name, for text search (see search.words)."""

    __tablename__ = "version_words"
    __table_args__ = (Index("ix_version_words_word", "word", "version_id"),)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    word: Mapped[str] = mapped_column(String(100), primary_key=True)


class IdempotencyKey(Base):
    """A principal's Idempotency-Key and the registration it produced: a retry returns the same version.
    Keys are per principal: the same key from another caller is another registration, never a replay."""

    __tablename__ = "idempotency_keys"
    principal: Mapped[str] = mapped_column(String(200), primary_key=True)  # the caller's name (registered_by)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[ModelVersion] = relationship(lazy="raise")  # so that it is written after the version


class HistoryEntry(Base):
    """One event of a version's journey, as the registrar saw it: the audit trail of the version."""

    __tablename__ = "version_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(String(220), index=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    producer: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class WritebackAction(StrEnum):
    APPROVAL_DECIDED = "approval_decided"  # tag <stage>-approved or <stage>-rejected
    DEPLOYED = "deployed"  # tag <stage> and set the stage's status


class WritebackStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # gave up after the worker's max attempts (logged)
    SKIPPED = "skipped"  # not written: the registry entry is not proven the version's own (reason in last_error)


class CometLink(Base):
    """The Comet registry model version a version was imported from, as the registrar's own Comet import
    found it (never what a registrant typed into lineage): the only entries write-backs may change."""

    __tablename__ = "comet_links"
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(200))
    registry_model: Mapped[str] = mapped_column(String(200))
    registry_version: Mapped[str] = mapped_column(String(100))
    experiment_key: Mapped[str] = mapped_column(String(100))  # the registry version's source experiment then
    linked_by: Mapped[str] = mapped_column(String(200))  # the principal who imported it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[ModelVersion] = relationship(lazy="raise")  # so that it is written after the version


class WritebackTarget(StrEnum):
    """Where a recorded write-back goes (one table, one worker: services/registrar/writebacks.py)."""

    COMET = "comet"  # the Comet registry model version the version was imported from
    SAGEMAKER = "sagemaker"  # the SageMaker model package the bridge registered it from


class SageMakerLink(Base):
    """The SageMaker model package a version was registered from by the bridge, as DescribeModelPackage
    showed it (services/registrar/sagemaker_bridge.py): one version per package ARN, however often its
    events come, and the only packages write-backs may update."""

    __tablename__ = "sagemaker_packages"
    package_arn: Mapped[str] = mapped_column(String(256), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), unique=True)
    package_group: Mapped[str] = mapped_column(String(200))  # ModelPackageGroupName
    package_version: Mapped[int] = mapped_column(Integer)  # ModelPackageVersion (modelgate numbers its own)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[ModelVersion] = relationship(lazy="raise")  # so that it is written after the version


class CometWritebackRow(Base):
    """A change to reflect on Comet's registry model version or on a SageMaker model package (`target`),
    recorded with the event that caused it and carried out by the WritebackWorker (a claim is a lease:
    `claimed_at` older than it is claimable). For SageMaker, `model` is the package ARN and `version` its
    ModelPackageVersion."""

    __tablename__ = "comet_writebacks"
    __table_args__ = (Index("ix_comet_writebacks_status_not_before", "status", "not_before"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))  # Comet's registry model name
    version: Mapped[str] = mapped_column(String(100))  # its version string, e.g. 1.0.0
    stage: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    decision: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=WritebackStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # the retry backoff
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # or, when skipped, why
    model_version_id: Mapped[str | None] = mapped_column(String(220), nullable=True)  # whose journey asked for it
    experiment_key: Mapped[str | None] = mapped_column(String(100), nullable=True)  # what the entry must come from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    target: Mapped[str] = mapped_column(String(20), default=WritebackTarget.COMET, server_default=WritebackTarget.COMET)


WritebackRow = CometWritebackRow  # the table holds every target's write-backs
