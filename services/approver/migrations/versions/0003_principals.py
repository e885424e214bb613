"""Principals (people and service accounts with roles, teams and approver groups) and their credentials
(API tokens and console sessions, stored as HMAC digests). Replaces `approvers`, whose unpeppered token
hashes cannot be carried over: each approver becomes a principal with the viewer role and no token
(an admin issues new ones: `modelgate principals token NAME`).

Revision ID: 0003_principals
Revises: 0002_policies_auth_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_principals"
down_revision: str | None = "0002_policies_auth_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False, server_default="person"),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("teams", sa.JSON(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("oidc_subject", sa.String(500), nullable=True, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("disabled_at", Timestamp, nullable=True),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("principal", sa.String(100), sa.ForeignKey("principals.name"), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.Column("csrf", sa.String(64), nullable=True),
    )
    op.execute(
        """INSERT INTO principals (name, kind, roles, teams, groups, created_at, created_by, disabled_at)
           SELECT substr(name, 1, 100), 'person', '["viewer"]', '[]', groups, created_at, 'migration', disabled_at
           FROM approvers"""
    )
    op.drop_table("approvers")


def downgrade() -> None:
    op.create_table(
        "approvers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("disabled_at", Timestamp, nullable=True),
    )
    op.execute("INSERT INTO approvers (name, groups, created_at, disabled_at) SELECT name, groups, created_at, disabled_at FROM principals")
    op.drop_table("credentials")
    op.drop_table("principals")
