"""The request audit: every change asked of the API and every refusal, with principal, source and outcome
(shared/audit.py).

Revision ID: 0002_request_audit
Revises: 0001_baseline
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_request_audit"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "request_audit" in sa.inspect(op.get_bind()).get_table_names():  # a database create_all made already has it
        return
    op.create_table(
        "request_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(100), nullable=True),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_request_audit_at", "request_audit", ["at"])
    op.create_index("ix_request_audit_principal", "request_audit", ["principal"])


def downgrade() -> None:
    op.drop_table("request_audit")
