"""Inference pipelines and stages in other AWS accounts: a deployment's steps (containers, with their pins)
and the account its stage lives in. Deployments from before stay NULL: one model, the deployer's account.

Revision ID: 0005_pipelines_accounts
Revises: 0004_wedge_outbox_set_aside
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_pipelines_accounts"
down_revision: str | None = "0004_wedge_outbox_set_aside"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deployments")}  # create_all made them already
    if "containers" not in existing:
        op.add_column("deployments", sa.Column("containers", sa.JSON(), nullable=True))
    if "account" not in existing:
        op.add_column("deployments", sa.Column("account", sa.String(12), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("account")
        batch.drop_column("containers")
