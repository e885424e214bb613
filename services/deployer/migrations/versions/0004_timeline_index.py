"""The timeline's index: a stage's deployments in the order they went live (routes/timeline.py reads
them by (group_name, stage, deployed_at), and `?at=` finds the one live at a time with it).

Revision ID: 0004_timeline_index
Revises: 0003_artifact_pins
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_timeline_index"
down_revision: str | None = "0003_artifact_pins"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deployments_timeline"


def upgrade() -> None:
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("deployments")}  # create_all made it already
    if INDEX not in existing:
        op.create_index(INDEX, "deployments", ["group_name", "stage", "deployed_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="deployments")
