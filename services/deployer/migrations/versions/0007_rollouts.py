"""Rollouts: a deployment's rollout spec (from its approval), and the rollouts table (services/deployer/rollout.py).

Revision ID: 0007_rollouts
Revises: 0005_pipelines_accounts
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_rollouts"
down_revision: str | None = "0005_pipelines_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if "rollout" not in {c["name"] for c in sa.inspect(bind).get_columns("deployments")}:  # create_all made it already
        op.add_column("deployments", sa.Column("rollout", sa.JSON(), nullable=True))
    if sa.inspect(bind).has_table("rollouts"):
        return
    op.create_table(
        "rollouts",
        sa.Column("deployment_id", sa.String(36), primary_key=True),
        sa.Column("group_name", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(40), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("live_deployment_id", sa.String(36), nullable=True),
        sa.Column("live_model_version_id", sa.String(220), nullable=True),
        sa.Column("router_url", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("evaluation", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("abort_requested_by", sa.String(200), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rollouts_status", "rollouts", ["status"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_status", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_column("deployments", "rollout")
