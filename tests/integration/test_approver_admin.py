"""Break-glass administration from the approver's machine, on SQLite and PostgreSQL, with the pepper in
LocalStack's Secrets Manager: an admin token is shown once and kept only as a digest, revoking the others
holds, the change is audited under the person at the machine (not under a name they choose), and a bad
policy file is explained."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from services.approver.admin import app
from services.approver.auth import ApproverAuthenticator
from services.approver.models import AuditEntry, Credential
from services.approver.settings import ApproverSettings
from shared.db import make_engine
from shared.errors import Refused
from shared.identity import token_digest
from shared.infra import boto_client

runner = CliRunner()
pytestmark = pytest.mark.localstack


@pytest.fixture
def env(database_url, localstack_endpoint, namespace):
    return {"MODELGATE_DATABASE_URL": database_url, "AWS_ENDPOINT_URL": localstack_endpoint, "MODELGATE_NAMESPACE": namespace}


def run(env: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=env)


def new_token(env: dict[str, str], *args: str) -> str:
    """The token `admin-token` printed on stdout (stderr may carry a driver's warning after it)."""
    made = run(env, "admin-token", *args)
    assert made.exit_code == 0, made.output
    [token] = [line for line in made.stdout.splitlines() if line.startswith("mgt_")]
    return token


def pepper(env: dict[str, str]) -> bytes:
    secrets = boto_client("secretsmanager", env["AWS_ENDPOINT_URL"])
    value = secrets.get_secret_value(SecretId=f"{env['MODELGATE_NAMESPACE']}/approver/token-pepper")["SecretString"]
    return value.encode()


def who_has(env: dict[str, str], token: str) -> str:
    async def check() -> str:
        engine = make_engine(env["MODELGATE_DATABASE_URL"])
        try:
            settings = ApproverSettings(database_url=env["MODELGATE_DATABASE_URL"])
            return (await ApproverAuthenticator(async_sessionmaker(engine), pepper(env), settings).authenticate(token)).name
        finally:
            await engine.dispose()

    return asyncio.run(check())


def rows(database_url: str, model: type) -> list:
    async def read() -> list:
        engine = make_engine(database_url)
        try:
            async with async_sessionmaker(engine)() as session:
                return list((await session.scalars(select(model))).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_break_glass_admin_token_is_shown_once_stored_as_a_digest_and_audited_under_the_machines_user(env):
    token = new_token(env)
    assert token.startswith("mgt_") and len(token) > 40
    assert who_has(env, token) == "admin"
    [stored] = rows(env["MODELGATE_DATABASE_URL"], Credential)
    assert stored.digest == token_digest(pepper(env), token) and token not in repr(vars(stored))

    second = new_token(env, "--revoke-others")
    assert who_has(env, second) == "admin"
    with pytest.raises(Refused, match="was revoked"):
        who_has(env, token)
    actors = {e.actor.split(":")[0] for e in rows(env["MODELGATE_DATABASE_URL"], AuditEntry)}
    assert actors == {"break-glass"}


def test_a_link_needs_a_known_principal_and_request(env):
    assert run(env, "admin-token").exit_code == 0
    unknown_request = run(env, "link", "no-such-request", "admin")
    assert unknown_request.exit_code == 1 and "no approval request no-such-request" in unknown_request.output
    unknown_approver = run(env, "link", "no-such-request", "zed")
    assert unknown_approver.exit_code == 1 and "zed is unknown or disabled" in unknown_approver.output


def test_check_policy_explains_a_bad_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("stages:\n  - {name: prod, approval: manual, approvers: 2}\n")
    checked = runner.invoke(app, ["check-policy", str(path)])
    assert checked.exit_code == 1 and "stage 'prod' is manual: name the approver group" in checked.output
    assert runner.invoke(app, ["check-policy"]).exit_code == 0
