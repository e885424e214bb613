"""Artifact pins: the SHA-256 digest (`sha256:<hex>`) and S3 VersionId of a version's artifact, taken at
registration, so that what was approved is what is served (shared/pins.py). Rows from before stay NULL.

Revision ID: 0008_artifact_pins
Revises: 0007_comet_links
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_artifact_pins"
down_revision: str | None = "0007_comet_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("model_versions")}  # create_all made them already
    if "artifact_digest" not in existing:
        op.add_column("model_versions", sa.Column("artifact_digest", sa.String(80), nullable=True))
    if "artifact_version_id" not in existing:
        op.add_column("model_versions", sa.Column("artifact_version_id", sa.String(1024), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 has it): a batch copy would drop model_versions, which other tables'
    # foreign keys still reference.
    op.drop_column("model_versions", "artifact_version_id")
    op.drop_column("model_versions", "artifact_digest")
