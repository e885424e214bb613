"""The approver's tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import DDL, JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime
from shared.events import new_id, utcnow


class RequestStatus(StrEnum):
    """Where an approval request stands (stored as is; the API's `?status=pending` filter names PENDING)."""

    PENDING = "pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class KnownVersion(Base):
    """What the approver knows of a registered version (from ModelRegistered)."""

    __tablename__ = "known_versions"
    model_version_id: Mapped[str] = mapped_column(String(220), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    registered_by: Mapped[str] = mapped_column(String(200))
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_digest: Mapped[str | None] = mapped_column(String(80))  # sha256:<hex> (shared/pins.py)
    artifact_version_id: Mapped[str | None] = mapped_column(String(1024))  # its S3 VersionId
    # An inference pipeline's steps as registered (ModelRegistered.containers), carried to ApprovalDecided.
    containers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_card_summary: Mapped[str | None] = mapped_column(Text)


class ApprovalRequest(Base):
    """One version's request for one stage: pending until approved, rejected, expired or superseded."""

    __tablename__ = "approval_requests"
    __table_args__ = (
        UniqueConstraint("model_version_id", "stage"),
        # At most one open request per group and stage where newer versions supersede older ones:
        # "open" while pending on such a stage, NULL otherwise (NULLs never collide).
        Index("uq_approval_requests_open_slot", "group_name", "stage", "open_slot", unique=True),
        Index("ix_approval_requests_status_expires_at", "status", "expires_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("known_versions.model_version_id"))
    group_name: Mapped[str] = mapped_column(String(200), default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(40), index=True)  # pending | Approved | Rejected
    policy_rule: Mapped[str] = mapped_column(Text)
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    approver_group: Mapped[str | None] = mapped_column(String(200))
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_to: Mapped[str | None] = mapped_column(String(200))
    open_slot: Mapped[str | None] = mapped_column(String(10))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_reason: Mapped[str | None] = mapped_column(Text)  # why it closed without a vote deciding it
    superseded_by: Mapped[str | None] = mapped_column(String(220))

    @property
    def eligible_groups(self) -> list[str]:
        """Who may vote: the stage's group, and the wider group once escalated."""
        return [g for g in (self.approver_group, self.escalated_to) if g]


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("approval_id", "approver"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"))
    approver: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String(20), default="token")  # token | link
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LiveVersion(Base):
    """What is deployed in each stage of each group, as announced by Deployed."""

    __tablename__ = "live_versions"
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(String(220))
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Principal(Base):
    """A person or service account: roles, teams, approver groups, and (for OIDC) the identity it is bound to."""

    __tablename__ = "principals"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # shared.identity.normalise_name
    kind: Mapped[str] = mapped_column(String(20), default="person")  # shared.identity.Kind
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    teams: Mapped[list[str]] = mapped_column(JSON, default=list)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)  # approver groups
    oidc_subject: Mapped[str | None] = mapped_column(String(500), unique=True)  # "<issuer> <sub>"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CredentialKind(StrEnum):
    TOKEN = "token"  # an API token
    SESSION = "session"  # a console sign-in


class Credential(Base):
    """An API token or console session of a principal: only its HMAC digest is kept, never the secret."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public: how it is listed and revoked
    principal: Mapped[str] = mapped_column(ForeignKey("principals.name"), index=True)
    kind: Mapped[str] = mapped_column(String(20), default=CredentialKind.TOKEN)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    csrf: Mapped[str | None] = mapped_column(String(64))  # a session's form token


class UsedLink(Base):
    """Decision links already used: each link decides once."""

    __tablename__ = "used_links"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    approval_id: Mapped[str] = mapped_column(String(36))
    approver: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """The audit trail: append-only (the database refuses UPDATE and DELETE on it)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_version_at", "model_version_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    model_version_id: Mapped[str | None] = mapped_column(String(220))
    stage: Mapped[str | None] = mapped_column(String(40))
    approval_id: Mapped[str | None] = mapped_column(String(36), index=True)
    decision: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    policy_rule: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


#: Makes audit_log append-only in the database itself (used by create_all and by the migration).
APPEND_ONLY_DDL = {
    "sqlite": [
        """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$""",
        """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
           FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    ],
}

for _dialect, _statements in APPEND_ONLY_DDL.items():
    for _statement in _statements:
        event.listen(AuditEntry.__table__, "after_create", DDL(_statement).execute_if(dialect=_dialect))
