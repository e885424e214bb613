"""Fixtures for real dependencies. A missing LocalStack or PostgreSQL fails the test: it never skips."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

LOCALSTACK = os.environ.get("MODELGATE_TEST_ENDPOINT", "http://127.0.0.1:4566")
POSTGRES_ADMIN = os.environ.get("MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# tests/compose runs against a `docker compose up` stack, tests/ecs boots the template's task definitions in
# containers: only scripts/test-compose.sh (which starts one and sets MODELGATE_COMPOSE_PROJECT) and
# scripts/test-ecs.sh (MODELGATE_ECS_PROJECT) collect them.
collect_ignore = [
    directory
    for directory, variable in (("compose", "MODELGATE_COMPOSE_PROJECT"), ("ecs", "MODELGATE_ECS_PROJECT"))
    if not os.environ.get(variable)
]

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def localstack_endpoint() -> str:
    """LocalStack's URL; `make test` starts it (scripts/localstack.sh start)."""
    try:
        httpx.get(f"{LOCALSTACK}/_localstack/health", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"LocalStack is not reachable at {LOCALSTACK} ({exc}); start it with 'make localstack'")
    return LOCALSTACK


@pytest.fixture
def namespace() -> str:
    """A fresh namespace, so each test gets its own topic, queues and bucket."""
    return f"t{uuid.uuid4().hex[:10]}"


def _postgres(statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty PostgreSQL database (dropped afterwards) as an SQLAlchemy async URL."""
    name = f"mg_{uuid.uuid4().hex[:12]}"
    try:
        _postgres(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN} ({exc!r})")
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Each test using this runs twice: on an SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/test.db"
    return request.getfixturevalue("postgres_url")
