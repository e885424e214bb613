"""Comet write-backs: a row per change to reflect on Comet's registry, done by a worker after the event's
transaction commits (no Comet call while the version's row is locked).

Revision ID: 0003_comet_writebacks
Revises: 0002_catalog
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_comet_writebacks"
down_revision: str | None = "0002_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "comet_writebacks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("stage", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("decision", sa.String(40), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=True),
        sa.Column("not_before", Timestamp, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_comet_writebacks_status_not_before", "comet_writebacks", ["status", "not_before"])


def downgrade() -> None:
    op.drop_index("ix_comet_writebacks_status_not_before", table_name="comet_writebacks")
    op.drop_table("comet_writebacks")
