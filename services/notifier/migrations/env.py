"""Alembic's entry point for the notifier's migrations (see shared/migrations.py)."""

from shared.migrations import run_env

run_env()
