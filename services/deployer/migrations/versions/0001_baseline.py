"""The deployer's schema as create_all made it before the deployer had migrations.

Revision ID: 0001_baseline
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001_baseline'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('deployments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('group_name', sa.String(length=200), nullable=False),
    sa.Column('stage', sa.String(length=40), nullable=False),
    sa.Column('model_version_id', sa.String(length=220), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('artifact_uri', sa.Text(), nullable=False),
    sa.Column('target', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=40), nullable=False),
    sa.Column('approval_id', sa.String(length=36), nullable=True),
    sa.Column('cause_event_id', sa.String(length=36), nullable=True),
    sa.Column('requested_by', sa.String(length=400), nullable=True),
    sa.Column('rollback', sa.Boolean(), nullable=False),
    sa.Column('restores_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('previous_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('previous_model_version_id', sa.String(length=220), nullable=True),
    sa.Column('rollback_to_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('endpoint_url', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('started_at', Timestamp, nullable=True),
    sa.Column('deployed_at', Timestamp, nullable=True),
    sa.Column('finished_at', Timestamp, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('approval_id')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_group_name'), ['group_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_status'), ['status'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('published_at', Timestamp, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_published_at'), ['published_at'], unique=False)

    op.create_table('processed_events',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('processed_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_table('stages',
    sa.Column('group_name', sa.String(length=200), nullable=False),
    sa.Column('stage', sa.String(length=40), nullable=False),
    sa.Column('live_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('newest_version', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=120), nullable=True),
    sa.Column('lease_until', Timestamp, nullable=True),
    sa.PrimaryKeyConstraint('group_name', 'stage')
    )


def downgrade() -> None:
    op.drop_table('stages')
    op.drop_table('processed_events')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_published_at'))

    op.drop_table('outbox')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_status'))
        batch_op.drop_index(batch_op.f('ix_deployments_group_name'))

    op.drop_table('deployments')
