"""Signed outbound webhooks: `webhooks add|list|remove|test|rotate|deliveries|redeliver` (an admin's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.commands.common import JsonOption, TokenOption, clients, console, print_json, run, styled, when
from modelgate.sdk import AsyncClient

app = typer.Typer(help="Subscribe other systems to modelgate's events (signed, Standard Webhooks).",
                  no_args_is_help=True)


def _call(work: Callable[[AsyncClient], Awaitable[Any]], token: str) -> Any:
    async def go() -> Any:
        async with clients(token) as mg:
            return await work(mg)

    return run(go())


@app.command()
def add(
    url: Annotated[str, typer.Argument(help="https URL the events are POSTed to.")],
    event_type: Annotated[list[str], typer.Option("--event-type", "-e", help="Only this event type (repeatable).")] = [],  # noqa: B006
    group: Annotated[list[str], typer.Option("--group", "-g", help="Only this model group (repeatable).")] = [],  # noqa: B006
    stage: Annotated[list[str], typer.Option("--stage", "-s", help="Only events of this stage (repeatable).")] = [],  # noqa: B006
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    preset: Annotated[str, typer.Option(help="standard, or github-dispatch (GitHub's repository_dispatch).")] = "standard",
    auth_token: Annotated[str | None, typer.Option(envvar="MODELGATE_WEBHOOK_AUTH_TOKEN",
                                                   help="Sent as a bearer token (e.g. a GitHub token).")] = None,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Subscribe URL to events; prints the signing secret once (verify deliveries with it).

    [bold]Examples[/]
      modelgate webhooks add https://ci.example.com/hooks/modelgate -e Deployed -s prod
      modelgate webhooks add https://api.github.com/repos/acme/serving/dispatches --preset github-dispatch \\
          -e Deployed -s prod --auth-token "$GITHUB_TOKEN"
    """
    body = {"url": url, "event_types": event_type, "groups": group, "stages": stage, "description": description,
            "preset": preset, "auth_token": auth_token}
    made = _call(lambda mg: mg.notifier.add_webhook(body), token)
    if json_out:
        print_json(made)
        return
    console.print(f"subscribed [bold]{made['id']}[/] ({made['url']})")
    console.print(f"signing secret (shown once, keep it with the receiver): [bold]{made['secret']}[/]")


@app.command("list")
def list_(token: TokenOption = "", json_out: JsonOption = False) -> None:
    """The active subscriptions (URLs shown as host and digest).

    [bold]Examples[/]
      modelgate webhooks list
      modelgate webhooks list --json | jq -r '.[].id'
    """
    rows = _call(lambda mg: mg.notifier.webhooks(), token)
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} webhook subscription(s)")
    for column in ("id", "url", "preset", "event types", "groups", "stages", "by"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["id"], r["url"], r["preset"], ", ".join(r["event_types"]) or "all",
                      ", ".join(r["groups"]) or "all", ", ".join(r["stages"]) or "all", r["created_by"])
    console.print(table)


@app.command()
def remove(subscription_id: str, token: TokenOption = "") -> None:
    """Stop sending to a subscription (its delivery log stays).

    [bold]Examples[/]
      modelgate webhooks remove 5c3e0d2a-...
    """
    _call(lambda mg: mg.notifier.remove_webhook(subscription_id), token)
    console.print(f"removed {subscription_id}")


@app.command()
def rotate(
    subscription_id: str,
    overlap_hours: Annotated[float, typer.Option(help="Hours both secrets sign, while the receiver switches.")] = 24,
    token: TokenOption = "",
) -> None:
    """A new signing secret; deliveries carry both signatures for --overlap-hours.

    [bold]Examples[/]
      modelgate webhooks rotate 5c3e0d2a-... --overlap-hours 48
    """
    made = _call(lambda mg: mg.notifier.rotate_webhook(subscription_id, overlap_hours), token)
    console.print(f"new signing secret (shown once): [bold]{made['secret']}[/]; the old one signs too for "
                  f"{overlap_hours:g} h")


@app.command()
def test(
    subscription_id: str,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the receiver's answer.")] = 10,
    token: TokenOption = "",
) -> None:
    """Send a signed WebhookTest delivery and show what the receiver answered (exit 1 when it refused).

    [bold]Examples[/]
      modelgate webhooks test 5c3e0d2a-...
    """

    async def go(mg: AsyncClient) -> dict[str, Any]:
        queued = await mg.notifier.test_webhook(subscription_id)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            found = [d for d in await mg.notifier.webhook_deliveries(subscription_id, 20) if d["id"] == queued["id"]]
            if (found and found[0]["attempts"]) or asyncio.get_running_loop().time() > deadline:
                return found[0] if found else queued
            await asyncio.sleep(0.3)

    delivery = _call(go, token)
    last = delivery["attempts"][-1] if delivery["attempts"] else None
    if last is None:
        console.print(f"queued; no attempt yet: see 'modelgate webhooks deliveries {subscription_id}'")
    elif last["error"]:
        console.print(f"[red]failed:[/] {last['error']}; tried again at {when(delivery['next_attempt_at'])}")
        raise typer.Exit(1)
    else:
        console.print(f"[green]delivered[/]: HTTP {last['status_code']} in {last['duration_ms']} ms")


@app.command()
def deliveries(subscription_id: str, limit: int = 50, token: TokenOption = "", json_out: JsonOption = False) -> None:
    """A subscription's deliveries, newest first, with every attempt.

    [bold]Examples[/]
      modelgate webhooks deliveries 5c3e0d2a-... --limit 20
      modelgate webhooks deliveries 5c3e0d2a-... --json | jq '.[] | select(.status == "failed") | .id'
    """
    rows = _call(lambda mg: mg.notifier.webhook_deliveries(subscription_id, limit), token)
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"deliveries to {subscription_id}")
    for column in ("id", "event", "version", "status", "attempts", "last answer", "next try"):
        table.add_column(column)
    for d in rows:
        last = d["attempts"][-1] if d["attempts"] else {}
        answer = last.get("error") or (f"HTTP {last['status_code']}" if last else "")
        table.add_row(str(d["id"]), d["event_type"], d["correlation_id"], styled(d["status"]), str(len(d["attempts"])),
                      answer, when(d["next_attempt_at"]))
    console.print(table)


@app.command()
def redeliver(delivery_id: int, token: TokenOption = "") -> None:
    """Send one delivery again (same webhook-id: a receiver that has it can drop it).

    [bold]Examples[/]
      modelgate webhooks redeliver 812
    """
    _call(lambda mg: mg.notifier.redeliver(delivery_id), token)
    console.print(f"delivery {delivery_id} queued again")
