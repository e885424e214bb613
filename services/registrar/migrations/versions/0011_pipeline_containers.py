"""Inference pipelines: a version's ordered steps (containers), each with its artifact's pin. Versions from
before stay NULL: a single model.

Revision ID: 0011_pipeline_containers
Revises: 0010_sagemaker_bridge
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_pipeline_containers"
down_revision: str | None = "0010_sagemaker_bridge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("model_versions")}  # create_all made it already
    if "containers" not in existing:
        op.add_column("model_versions", sa.Column("containers", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "containers")  # not a batch: other tables' foreign keys name model_versions
