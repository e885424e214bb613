"""Versions of one group, newest first: an index on (group_name, created_at, id), so a search within a group
(`group=` with tag, metric or text filters) reads the group's versions in the order asked for and stops when
the page is full, instead of reading all of them and sorting (docs/performance.md, the catalog at 1M).

Revision ID: 0012_versions_by_group_newest
Revises: 0011_pipeline_containers
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_versions_by_group_newest"
down_revision: str | None = "0011_pipeline_containers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_model_versions_group_created_at"


def upgrade() -> None:
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("model_versions")}  # create_all made it
    if INDEX not in existing:
        op.create_index(INDEX, "model_versions", ["group_name", "created_at", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="model_versions")
