"""The catalog: group tags and owners; version description and metadata; metrics, tags, stages and words
(of the group's name; skeleton versions have no description) copied into tables of their own, indexed for
search; idempotency keys.

Revision ID: 0002_catalog
Revises: 0001_baseline
"""

import json
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_catalog"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
VERSION_ID = sa.String(220)


def upgrade() -> None:
    # SQLite adds a NOT NULL column only with a constant default; updated_at gets its real value right after.
    op.add_column("model_groups", sa.Column("tags", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("model_groups", sa.Column("owners", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column(
        "model_groups", sa.Column("updated_at", Timestamp, nullable=False, server_default="1970-01-01 00:00:00+00:00")
    )
    op.execute("UPDATE model_groups SET updated_at = created_at")
    op.add_column("model_versions", sa.Column("description", sa.Text(), nullable=False, server_default=""))
    op.add_column("model_versions", sa.Column("metadata", sa.JSON(), nullable=False, server_default="{}"))
    op.create_index("ix_model_versions_created_at_id", "model_versions", ["created_at", "id"])
    op.create_index("ix_model_versions_status_created_at", "model_versions", ["approval_status", "created_at", "id"])
    op.create_index("ix_model_versions_registered_by", "model_versions", ["registered_by"])

    def version_id() -> sa.Column:
        return sa.Column("version_id", VERSION_ID, sa.ForeignKey("model_versions.id"), primary_key=True)

    metrics = op.create_table(
        "version_metrics",
        version_id(),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Double(), nullable=False),
    )
    op.create_index("ix_version_metrics_name_value", "version_metrics", ["name", "value", "version_id"])
    tags = op.create_table(
        "version_tags",
        version_id(),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.String(500), nullable=False),
    )
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value", "version_id"])
    stages = op.create_table(
        "version_stages",
        version_id(),
        sa.Column("stage", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
    )
    op.create_index("ix_version_stages_stage_status", "version_stages", ["stage", "status", "version_id"])
    words = op.create_table("version_words", version_id(), sa.Column("word", sa.String(100), primary_key=True))
    op.create_index("ix_version_words_word", "version_words", ["word", "version_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("model_version_id", VERSION_ID, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    _index_existing_versions(metrics, tags, stages, words)


def _index_existing_versions(metrics: sa.Table, tags: sa.Table, stages: sa.Table, words: sa.Table) -> None:
    def loaded(value: object) -> dict:
        return json.loads(value) if isinstance(value, str) else (value or {})

    metric_rows, tag_rows, stage_rows, word_rows = [], [], [], []
    for vid, group, metric_json, tag_json, stage_json in op.get_bind().execute(
        sa.text("SELECT id, group_name, metrics, tags, stages FROM model_versions")
    ):
        metric_rows += [{"version_id": vid, "name": k, "value": v} for k, v in loaded(metric_json).items()]
        tag_rows += [{"version_id": vid, "key": k, "value": v} for k, v in loaded(tag_json).items()]
        stage_rows += [{"version_id": vid, "stage": k, "status": v["status"]} for k, v in loaded(stage_json).items()]
        word_rows += [{"version_id": vid, "word": w} for w in dict.fromkeys(re.findall(r"[a-z0-9]+", group.lower()))]
    for table, rows in ((metrics, metric_rows), (tags, tag_rows), (stages, stage_rows), (words, word_rows)):
        if rows:
            op.bulk_insert(table, rows)


def downgrade() -> None:
    for table in ("idempotency_keys", "version_words", "version_stages", "version_tags", "version_metrics"):
        op.drop_table(table)
    for index in ("ix_model_versions_registered_by", "ix_model_versions_status_created_at", "ix_model_versions_created_at_id"):
        op.drop_index(index, table_name="model_versions")
    for table, column in (("model_versions", "metadata"), ("model_versions", "description"),
                          ("model_groups", "updated_at"), ("model_groups", "owners"), ("model_groups", "tags")):
        op.drop_column(table, column)
