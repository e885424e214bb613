"""Signed outbound webhooks: subscriptions, each delivery's attempts, and when a delivery is tried again.

Revision ID: 0004_webhooks
Revises: 0003_request_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_webhooks"
down_revision: str | None = "0003_request_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "next_attempt_at" not in {c["name"] for c in inspector.get_columns("deliveries")}:
        op.add_column("deliveries", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        op.create_index("ix_deliveries_next_attempt_at", "deliveries", ["next_attempt_at"])
    tables = inspector.get_table_names()
    if "webhook_subscriptions" not in tables:
        op.create_table(
            "webhook_subscriptions",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("url", sa.Text(), nullable=False),
            sa.Column("preset", sa.String(30), nullable=False),
            sa.Column("description", sa.String(500), nullable=False),
            sa.Column("event_types", sa.JSON(), nullable=False),
            sa.Column("groups", sa.JSON(), nullable=False),
            sa.Column("stages", sa.JSON(), nullable=False),
            sa.Column("secret", sa.String(100), nullable=False),
            sa.Column("previous_secret", sa.String(100), nullable=True),
            sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("auth_token", sa.Text(), nullable=True),
            sa.Column("created_by", sa.String(100), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        )
    if "delivery_attempts" not in tables:
        op.create_table(
            "delivery_attempts",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("delivery_id", sa.Integer(), sa.ForeignKey("deliveries.id"), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("status_code", sa.Integer(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("duration_ms", sa.Integer(), nullable=False),
        )
        op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_deliveries_next_attempt_at", "deliveries")
    op.drop_column("deliveries", "next_attempt_at")
