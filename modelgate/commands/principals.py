"""`modelgate principals`: people and service accounts, their roles, teams, approver groups and tokens.

Every command acts over the approver's HTTP API with your token (an admin's), so the audit trail names you.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.commands.common import JsonOption, TokenOption, clients, console, print_json, run, when

app = typer.Typer(help="People and service accounts: add them, give them roles, issue and revoke tokens.",
                  no_args_is_help=True)
Roles = Annotated[list[str], typer.Option("--role", "--roles", "-r", help="viewer, registrant, operator[:<stage>], auditor, admin (repeat)")]
Teams = Annotated[list[str], typer.Option("--team", "--teams", "-t", help="A team it belongs to; teams own model groups (repeat)")]
Groups = Annotated[list[str], typer.Option("--group", "--groups", "-g", help="An approver group it decides in (repeat)")]


def _call(work: Any, token: str) -> Any:
    async def go() -> Any:
        async with clients(token) as mg:
            return await work(mg)

    return run(go())


def _show_token(record: dict[str, Any]) -> None:
    console.print(f"token of [bold]{record['name']}[/] (shown once; only its digest is kept):")
    print(record["token"])


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="a-z 0-9 . _ @ + - (normalised: NFKC, lower case)")],
    role: Roles = [],  # noqa: B006 (typer's list options)
    team: Teams = [],  # noqa: B006
    group: Groups = [],  # noqa: B006
    service: Annotated[bool, typer.Option("--service", help="A service account (CI pipeline, training job)")] = False,
    oidc_subject: Annotated[str | None, typer.Option(help="Bind to this `sub` of the identity provider's JWTs")] = None,
    no_token: Annotated[bool, typer.Option("--no-token", help="Issue no API token (an OIDC-only account)")] = False,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Add a principal and print its API token, once (admin).

    [bold]Examples[/]
      modelgate principals add lee --group ml-leads
      modelgate principals add ana --role registrant --team fraud
      modelgate principals add ci-fraud --service --role registrant --team fraud --oidc-subject repo:acme/fraud:ref:refs/heads/main --no-token
    """
    body = {"name": name, "kind": "service" if service else "person", "roles": role or ["viewer"], "teams": team,
            "groups": group, "oidc_subject": oidc_subject, "token": not no_token}
    record = _call(lambda mg: mg.approver.add_principal(body), token)
    if json_out:
        print_json(record)
    elif record.get("token"):
        _show_token(record)
    else:
        console.print(f"added {record['name']} (no token: it signs in with its identity provider)")


@app.command("list")
def list_principals(token: TokenOption = "", json_out: JsonOption = False) -> None:
    """The principals, their roles, teams, groups and active tokens (admin or auditor).

    [bold]Examples[/]
      modelgate principals list
      modelgate principals list --json | jq -r '.[].name'
    """
    rows = _call(lambda mg: mg.approver.principals(), token)
    if json_out:
        print_json(rows)
        return
    table = Table("name", "kind", "roles", "teams", "approver groups", "tokens", "state")
    for p in rows:
        active = [c for c in p["credentials"] if not c["revoked_at"]]
        state = f"disabled {when(p['disabled_at'])}" if p["disabled_at"] else "active"
        table.add_row(p["name"], p["kind"], ", ".join(p["roles"]), ", ".join(p["teams"]), ", ".join(p["groups"]),
                      ", ".join(c["id"] for c in active) or "–", state)
    console.print(table)


@app.command("set")
def set_principal(
    name: str,
    role: Roles = [],  # noqa: B006
    team: Teams = [],  # noqa: B006
    group: Groups = [],  # noqa: B006
    token: TokenOption = "",
) -> None:
    """Replace a principal's roles, teams or approver groups (those given), admin only.

    [bold]Examples[/]
      modelgate principals set lee --groups ml-leads --groups model-risk
      modelgate principals set ops --role operator:prod
    """
    change = {k: v for k, v in (("roles", role), ("teams", team), ("groups", group)) if v}
    record = _call(lambda mg: mg.approver.change_principal(name, change), token)
    console.print(f"{record['name']}: roles {', '.join(record['roles'])}; teams {', '.join(record['teams']) or '–'}; "
                  f"groups {', '.join(record['groups']) or '–'}")


@app.command("token")
def new_token(
    name: str,
    revoke_others: Annotated[bool, typer.Option(help="Revoke the principal's other tokens")] = False,
    token: TokenOption = "",
) -> None:
    """Issue a new API token for NAME and print it, once (admin).

    [bold]Examples[/]
      modelgate principals token lee
      modelgate principals token lee --revoke-others     # the old ones stop working
    """
    _show_token(_call(lambda mg: mg.approver.new_token(name, revoke_others), token))


@app.command()
def revoke(name: str, credential_id: Annotated[str, typer.Argument(help="From 'modelgate principals list'")],
           token: TokenOption = "") -> None:
    """Revoke one token of NAME: it stops working at once on the approver, within MODELGATE_AUTH_CACHE_SECONDS elsewhere.

    [bold]Examples[/]
      modelgate principals revoke lee 3f2c9a1b0d4e5f60      # the id from 'modelgate principals list'
    """
    _call(lambda mg: mg.approver.revoke_token(name, credential_id), token)
    console.print(f"revoked token {credential_id} of {name}")


@app.command()
def disable(name: str, token: TokenOption = "") -> None:
    """Disable NAME and revoke all its tokens and sessions (admin); stays so across restarts.

    [bold]Examples[/]
      modelgate principals disable lee
    """
    _call(lambda mg: mg.approver.change_principal(name, {"disabled": True}), token)
    console.print(f"{name} is disabled; its tokens are revoked")


@app.command()
def enable(name: str, token: TokenOption = "") -> None:
    """Enable NAME again (issue it a new token: the old ones stay revoked).

    [bold]Examples[/]
      modelgate principals enable lee && modelgate principals token lee
    """
    _call(lambda mg: mg.approver.change_principal(name, {"disabled": False}), token)
    console.print(f"{name} is enabled; give it a token with 'modelgate principals token {name}'")


@app.command()
def me(token: TokenOption = "", json_out: JsonOption = False) -> None:
    """Who your credential names: roles, teams, approver groups.

    [bold]Examples[/]
      MODELGATE_TOKEN=... modelgate principals me
    """
    record = _call(lambda mg: mg.approver.me(), token)
    if json_out:
        print_json(record)
        return
    console.print(f"[bold]{record['name']}[/] ({record['kind']}, via {record['via']}): roles {', '.join(record['roles']) or '–'}; "
                  f"teams {', '.join(record['teams']) or '–'}; approver groups {', '.join(record['groups']) or '–'}")
