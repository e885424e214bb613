"""Administering approvers from the command line, on SQLite and PostgreSQL: a token is shown once and
stored hashed; disabling and rotating take effect; a bad policy file is explained."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from services.approver.admin import app
from services.approver.auth import authenticate, token_hash
from services.approver.models import Approver, AuditEntry
from shared.db import UnitOfWork, make_engine
from shared.errors import Refused

runner = CliRunner()


def run(database_url: str, *args: str):
    return runner.invoke(app, list(args), env={"MODELGATE_DATABASE_URL": database_url})


def who_has(database_url: str, token: str) -> str:
    async def check() -> str:
        engine = make_engine(database_url)
        try:
            async with UnitOfWork(async_sessionmaker(engine)) as uow:
                return (await authenticate(uow, token)).name
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


def test_an_approver_added_from_the_command_line_gets_a_token_shown_once_and_stored_hashed(database_url):
    added = run(database_url, "add-approver", "lee", "--group", "ml-leads", "--group", "model-risk")
    assert added.exit_code == 0, added.output
    token = added.output.strip().splitlines()[-1]
    assert token.startswith("mg_") and len(token) > 40
    assert who_has(database_url, token) == "lee"
    [stored] = rows(database_url, Approver)
    assert (stored.groups, stored.token_hash) == (["ml-leads", "model-risk"], token_hash(token))
    listed = run(database_url, "list")
    assert "lee" in listed.output and "active" in listed.output and token not in listed.output
    again = run(database_url, "add-approver", "lee", "--group", "x")
    assert again.exit_code == 1 and "exists already; use rotate-token or set-groups" in again.output

    rotated = run(database_url, "rotate-token", "lee").output.strip().splitlines()[-1]
    assert who_has(database_url, rotated) == "lee"
    with pytest.raises(Refused, match="unknown approver token"):
        who_has(database_url, token)
    assert run(database_url, "disable", "lee").exit_code == 0
    with pytest.raises(Refused, match="unknown approver token"):
        who_has(database_url, rotated)
    actions = [(e.action, e.actor.split(":")[0]) for e in rows(database_url, AuditEntry)]
    assert actions == [("approver_added", "admin"), ("token_rotated", "admin"), ("approver_disabled", "admin")]
    assert run(database_url, "set-groups", "nobody", "--group", "x").output.strip() == "no approver nobody; add one with add-approver"


def test_a_link_needs_a_known_approver_and_request(database_url):
    run(database_url, "add-approver", "kim", "--group", "model-risk")
    unknown_request = run(database_url, "link", "no-such-request", "kim")
    assert unknown_request.exit_code == 1 and "no approval request no-such-request" in unknown_request.output
    unknown_approver = run(database_url, "link", "no-such-request", "zed")
    assert unknown_approver.exit_code == 1 and "approver zed is unknown or disabled" in unknown_approver.output


def test_check_policy_explains_a_bad_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("stages:\n  - {name: prod, approval: manual, approvers: 2}\n")
    checked = runner.invoke(app, ["check-policy", str(path)])
    assert checked.exit_code == 1 and "stage 'prod' is manual: name the approver group" in checked.output
    assert runner.invoke(app, ["check-policy"]).exit_code == 0
