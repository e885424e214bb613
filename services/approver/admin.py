"""Break-glass administration of the approver, on its database directly (same MODELGATE_* environment as the
service). Principals are managed over HTTP with an admin's token (`modelgate principals ...`); this is for
when no admin token is at hand.

    python -m services.approver.admin admin-token                 # a new token for the admin principal
    python -m services.approver.admin link <approval_id> lee       # a signed decision link
    python -m services.approver.admin check-policy services/approver/policy.yaml

What it changes is audited under `break-glass:<os user>@<host>`: the person at the database's machine.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.approver import auth, links
from services.approver.models import ApprovalRequest, Principal
from services.approver.policy import PolicyError, load_policy, parse_duration
from services.approver.settings import ApproverSettings
from shared.aws import AwsClients
from shared.db import UnitOfWork, make_engine
from shared.errors import Refused
from shared.identity import Kind, Role
from shared.migrations import prepare_database

app = typer.Typer(help="Break-glass administration of the modelgate approver: admin tokens, decision links, policy.", no_args_is_help=True)
console = Console()
T = TypeVar("T")


def actor() -> str:
    return f"break-glass:{getpass.getuser()}@{socket.gethostname()}"


def in_database(work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Runs `work` in one transaction on the approver's database, then commits."""

    async def run() -> T:
        engine = make_engine(ApproverSettings().database_url)
        try:
            await prepare_database(engine, "approver")
            async with UnitOfWork(async_sessionmaker(engine, expire_on_commit=False)) as uow:
                result = await work(uow)
                await uow.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (ValueError, Refused) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


@app.command("admin-token")
def admin_token(
    name: Annotated[str, typer.Argument(help="The admin principal (created when missing)")] = auth.ADMIN,
    revoke_others: Annotated[bool, typer.Option(help="Revoke the principal's other tokens")] = False,
) -> None:
    """Print a new token of an admin principal, creating it if needed (when no admin token is at hand)."""

    async def work(uow: UnitOfWork) -> str:
        settings = ApproverSettings()
        async with AwsClients(settings, ("secretsmanager",)) as clients:
            pepper = await links.load_or_create_key(clients["secretsmanager"], settings.token_pepper_secret_name)
        row = await uow.session.get(Principal, name)
        if row is None:
            _, token, _ = await auth.add_principal(uow, pepper, actor(), name=name, kind=Kind.PERSON, roles=[Role.ADMIN],
                                                   teams=[], groups=[], oidc_subject=None, ttl=None)
            return token or ""
        if Role.ADMIN not in row.roles or row.disabled_at is not None:
            raise ValueError(f"{name} is not an enabled admin; pick another name to create a new admin")
        if revoke_others:
            await auth.revoke(uow, name, actor())
        token, _ = await auth.issue(uow, pepper, name, actor(), None)
        return token

    token = in_database(work)
    console.print(f"token of [bold]{name}[/] (shown once; only its digest is kept):")
    print(token)


@app.command()
def link(
    approval_id: str,
    approver: str,
    ttl: Annotated[str, typer.Option(help="How long the link stays valid, e.g. 30m, 24h, 2d")] = "",
) -> None:
    """Print a signed, expiring, single-use decision link of APPROVER for APPROVAL_ID."""
    settings = ApproverSettings()
    lifetime = parse_duration(ttl) if ttl else settings.link_ttl

    async def check(uow: UnitOfWork) -> None:
        await auth.enabled_principal(uow, approver)
        if await uow.session.get(ApprovalRequest, approval_id) is None:
            raise ValueError(f"no approval request {approval_id}")

    async def issue() -> str:
        async with AwsClients(settings, ("secretsmanager",)) as clients:
            key = await links.load_or_create_key(clients["secretsmanager"], settings.hmac_secret_name)
        token, claims = links.LinkSigner(key).issue(approval_id, approver, lifetime)
        console.print(f"valid until {claims.expires_at.isoformat()}, for one decision:")
        return links.link_url(settings.public_url, approval_id, token)

    in_database(check)
    print(asyncio.run(issue()))


@app.command("check-policy")
def check_policy(path: Annotated[Path | None, typer.Argument(help="Default: MODELGATE_POLICY_FILE")] = None) -> None:
    """Check a policy file and print its stages, or say what to fix."""
    path = path or ApproverSettings().policy_file
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    for number, stage in enumerate(policy.stages, 1):
        console.print(f"{number}. {stage.describe()}")
    console.print(f"[green]{path} is valid[/]")


if __name__ == "__main__":
    app()
