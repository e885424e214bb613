"""Stage policies (expiry, escalation, supersession, checks), approvers with hashed tokens, used decision
links, and the append-only audit trail.

Revision ID: 0002_policies_auth_audit
Revises: 0001_baseline
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.approver.models import APPEND_ONLY_DDL

revision: str = "0002_policies_auth_audit"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX: SQLite would otherwise copy approval_requests, which votes refers to.
    for column in (
        sa.Column("group_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("checks", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("escalated_to", sa.String(200), nullable=True),
        sa.Column("open_slot", sa.String(10), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.Column("superseded_by", sa.String(220), nullable=True),
    ):
        op.add_column("approval_requests", column)
    op.create_index("uq_approval_requests_open_slot", "approval_requests", ["group_name", "stage", "open_slot"], unique=True)
    op.create_index("ix_approval_requests_status_expires_at", "approval_requests", ["status", "expires_at"])
    op.execute(
        """UPDATE approval_requests SET
             group_name = (SELECT k.group_name FROM known_versions k WHERE k.model_version_id = approval_requests.model_version_id),
             version = (SELECT k.version FROM known_versions k WHERE k.model_version_id = approval_requests.model_version_id)"""
    )
    op.add_column("votes", sa.Column("via", sa.String(20), nullable=False, server_default="token"))

    op.create_table(
        "approvers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("disabled_at", Timestamp, nullable=True),
    )
    op.create_table(
        "used_links",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(36), nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("used_at", Timestamp, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("model_version_id", sa.String(220), nullable=True),
        sa.Column("stage", sa.String(40), nullable=True),
        sa.Column("approval_id", sa.String(36), nullable=True),
        sa.Column("decision", sa.String(20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("policy_rule", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_approval_id", "audit_log", ["approval_id"])
    op.create_index("ix_audit_log_version_at", "audit_log", ["model_version_id", "at"])
    for statement in APPEND_ONLY_DDL.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("used_links")
    op.drop_table("approvers")
    with op.batch_alter_table("votes", recreate="never") as batch:
        batch.drop_column("via")
    op.drop_index("ix_approval_requests_status_expires_at", "approval_requests")
    op.drop_index("uq_approval_requests_open_slot", "approval_requests")
    with op.batch_alter_table("approval_requests", recreate="never") as batch:
        for column in ("superseded_by", "closed_reason", "open_slot", "escalated_to", "expires_at", "checks", "version", "group_name"):
            batch.drop_column(column)
