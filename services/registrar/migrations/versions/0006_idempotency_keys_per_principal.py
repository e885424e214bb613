"""Idempotency keys belong to the principal who sent them: the key of `idempotency_keys` becomes
(principal, key), so one caller's key can no longer block or replay another's registration.

Existing keys go to the principal who registered their version (`model_versions.registered_by`, always the
caller's name). The table is copied rather than altered, the same way on SQLite and PostgreSQL.

Revision ID: 0006_idempotency_per_principal
Revises: 0005_request_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_idempotency_per_principal"
down_revision: str | None = "0005_request_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def _table(name: str, per_principal: bool) -> None:
    # The primary key is named, and differently each way: PostgreSQL keeps an index's name through a rename.
    principal = [sa.Column("principal", sa.String(200), nullable=False)] if per_principal else []
    key = ["principal", "key"] if per_principal else ["key"]
    op.create_table(
        name,
        *principal,
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("model_version_id", sa.String(220), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint(*key, name="idempotency_keys_principal_pkey" if per_principal else "idempotency_keys_pkey"),
    )


def _replace(select: str, per_principal: bool) -> None:
    """Rebuild idempotency_keys from `select` (over the current table, aliased k)."""
    _table("idempotency_keys_next", per_principal)
    columns = ("principal, " if per_principal else "") + "key, request_hash, model_version_id, created_at"
    op.execute(f"INSERT INTO idempotency_keys_next ({columns}) {select}")
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_next", "idempotency_keys")


def upgrade() -> None:
    _replace(
        "SELECT v.registered_by, k.key, k.request_hash, k.model_version_id, k.created_at"
        " FROM idempotency_keys k JOIN model_versions v ON v.id = k.model_version_id",
        per_principal=True,
    )


def downgrade() -> None:
    # Keys are global again: of one key used by several principals, one is kept (the first principal by name).
    _replace(
        "SELECT k.key, k.request_hash, k.model_version_id, k.created_at FROM idempotency_keys k"
        " WHERE k.principal = (SELECT min(o.principal) FROM idempotency_keys o WHERE o.key = k.key)",
        per_principal=False,
    )
