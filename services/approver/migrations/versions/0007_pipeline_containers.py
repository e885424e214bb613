"""Inference pipelines: a known version's ordered steps (containers) with their pins, carried to
ApprovalDecided. Versions from before stay NULL: a single model.

Revision ID: 0007_pipeline_containers
Revises: 0006_wedge_outbox_set_aside
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_pipeline_containers"
down_revision: str | None = "0006_wedge_outbox_set_aside"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("known_versions")}  # create_all made it already
    if "containers" not in existing:
        op.add_column("known_versions", sa.Column("containers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("known_versions") as batch:
        batch.drop_column("containers")
