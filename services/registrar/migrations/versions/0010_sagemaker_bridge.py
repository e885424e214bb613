"""The SageMaker Model Registry bridge: `sagemaker_packages` links a version to the model package it was
registered from (one version per package ARN), and write-back rows name their `target` (comet, sagemaker);
rows from before are Comet's.

Revision ID: 0010_sagemaker_bridge
Revises: 0009_wedge_outbox_set_aside
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_sagemaker_bridge"
down_revision: str | None = "0009_wedge_outbox_set_aside"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sagemaker_packages",
        sa.Column("package_arn", sa.String(256), primary_key=True),
        sa.Column("model_version_id", sa.String(220), sa.ForeignKey("model_versions.id"), nullable=False, unique=True),
        sa.Column("package_group", sa.String(200), nullable=False),
        sa.Column("package_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("comet_writebacks", sa.Column("target", sa.String(20), nullable=False, server_default="comet"))


def downgrade() -> None:
    with op.batch_alter_table("comet_writebacks") as batch:
        batch.drop_column("target")
    op.drop_table("sagemaker_packages")
