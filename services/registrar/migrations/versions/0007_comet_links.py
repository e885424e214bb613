"""Comet write-backs only to registry entries the registrar's own import linked: `comet_links` records, per
version, the Comet registry model version it was imported from and that version's source experiment; each
`comet_writebacks` row names its version and the experiment the entry must still come from.

Rows recorded before (pending, without an experiment) are skipped by the worker with the reason, and versions
registered from Comet before have no link: their write-backs are skipped too (docs/comet.md, "Upgrading").

Revision ID: 0007_comet_links
Revises: 0006_idempotency_per_principal
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_comet_links"
down_revision: str | None = "0006_idempotency_per_principal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "comet_links",
        sa.Column("model_version_id", sa.String(220), sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("workspace", sa.String(200), nullable=False),
        sa.Column("registry_model", sa.String(200), nullable=False),
        sa.Column("registry_version", sa.String(100), nullable=False),
        sa.Column("experiment_key", sa.String(100), nullable=False),
        sa.Column("linked_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("comet_writebacks", sa.Column("model_version_id", sa.String(220), nullable=True))
    op.add_column("comet_writebacks", sa.Column("experiment_key", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("comet_writebacks") as batch:
        batch.drop_column("experiment_key")
        batch.drop_column("model_version_id")
    op.drop_table("comet_links")
