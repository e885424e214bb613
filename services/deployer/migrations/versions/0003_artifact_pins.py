"""Artifact pins: the SHA-256 digest (`sha256:<hex>`) and S3 VersionId of the artifact a deployment
serves, as pinned at registration, checked before any target serves it (shared/pins.py). Rows from
before stay NULL: they deploy unchecked.

Revision ID: 0003_artifact_pins
Revises: 0002_request_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_artifact_pins"
down_revision: str | None = "0002_request_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deployments")}  # create_all made them already
    if "artifact_digest" not in existing:
        op.add_column("deployments", sa.Column("artifact_digest", sa.String(80), nullable=True))
    if "artifact_version_id" not in existing:
        op.add_column("deployments", sa.Column("artifact_version_id", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("artifact_version_id")
        batch.drop_column("artifact_digest")
