"""Teams own model groups and may share them read-only with other teams.

Revision ID: 0004_group_teams
Revises: 0003_comet_writebacks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_group_teams"
down_revision: str | None = "0003_comet_writebacks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_groups", sa.Column("team", sa.String(100), nullable=True))
    op.add_column("model_groups", sa.Column("shared_with", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("model_groups") as batch:
        batch.drop_column("shared_with")
        batch.drop_column("team")
