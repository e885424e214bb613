"""Outbox rows the bus refused for good (too large, invalid) are set aside with the reason, so the rows after
them keep flowing (shared/outbox.py). Rows from before stay NULL: pending or published as they were.

Revision ID: 0006_wedge_outbox_set_aside
Revises: 0005_artifact_pins
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_wedge_outbox_set_aside"
down_revision: str | None = "0005_artifact_pins"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}  # create_all made them already
    if "set_aside_at" not in existing:
        op.add_column("outbox", sa.Column("set_aside_at", sa.DateTime(timezone=True), nullable=True))
        op.create_index("ix_outbox_set_aside_at", "outbox", ["set_aside_at"])
    if "set_aside_reason" not in existing:
        op.add_column("outbox", sa.Column("set_aside_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_outbox_set_aside_at", table_name="outbox")
    op.drop_column("outbox", "set_aside_reason")
    op.drop_column("outbox", "set_aside_at")
