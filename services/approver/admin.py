"""Administration of the approver, on its database directly (same MODELGATE_* environment as the service).

    python -m services.approver.admin add-approver lee --group ml-leads     # prints lee's token, once
    python -m services.approver.admin rotate-token lee
    python -m services.approver.admin set-groups lee --group ml-leads --group model-risk
    python -m services.approver.admin disable lee
    python -m services.approver.admin list
    python -m services.approver.admin link <approval_id> lee                 # a signed decision link
    python -m services.approver.admin check-policy services/approver/policy.yaml
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.approver import auth, links
from services.approver.models import ApprovalRequest, Approver
from services.approver.policy import PolicyError, load_policy, parse_duration
from services.approver.settings import ApproverSettings
from shared.aws import AwsClients
from shared.db import UnitOfWork, make_engine
from shared.errors import Refused
from shared.migrations import prepare_database

app = typer.Typer(help="Administer the modelgate approver: approvers, tokens, decision links, policy.", no_args_is_help=True)
console = Console()
T = TypeVar("T")
Groups = Annotated[list[str], typer.Option("--group", "-g", help="An approver group (repeat for several)")]


def actor() -> str:
    return f"admin:{getpass.getuser()}"


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


def show_token(name: str, token: str) -> None:
    console.print(f"token of [bold]{name}[/] (shown once; only its hash is kept):")
    print(token)


@app.command("add-approver")
def add_approver(name: str, group: Groups) -> None:
    """Add an approver in one or more groups, and print their API token."""
    show_token(name, in_database(lambda uow: auth.add_approver(uow, name, group, actor())))


@app.command("rotate-token")
def rotate_token(name: str) -> None:
    """Give an approver a new token (the old one stops working), and print it."""
    show_token(name, in_database(lambda uow: auth.rotate_token(uow, name, actor())))


@app.command("set-groups")
def set_groups(name: str, group: Groups) -> None:
    """Replace the groups an approver is in."""
    in_database(lambda uow: auth.set_groups(uow, name, group, actor()))
    console.print(f"{name} is in {', '.join(sorted(set(group)))}")


@app.command()
def disable(name: str) -> None:
    """Disable an approver: their token stops working (rotate-token enables them again)."""
    in_database(lambda uow: auth.disable(uow, name, actor()))
    console.print(f"{name} is disabled")


@app.command("list")
def list_approvers() -> None:
    """The approvers, their groups, and whether they can sign in."""

    async def approvers(uow: UnitOfWork) -> list[Approver]:
        return list((await uow.session.scalars(select(Approver).order_by(Approver.name))).all())

    table = Table("approver", "groups", "state")
    for a in in_database(approvers):
        state = "disabled" if a.disabled_at else ("active" if a.token_hash else "no token")
        table.add_row(a.name, ", ".join(a.groups), state)
    console.print(table)


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
        await auth.enabled_approver(uow, approver)
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
