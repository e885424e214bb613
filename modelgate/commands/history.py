"""What served where, and when: `live` (a stage's timeline) and `verify` (drift between what modelgate
records and what serves)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.client import Clients, ServiceError
from modelgate.commands.common import (
    ExitCode,
    JsonOption,
    TokenOption,
    clients,
    console,
    print_json,
    run,
    when,
)


def _time(value: str | None) -> str | None:
    """An ISO 8601 time with its offset, as given (the deployer reads it); BadParameter otherwise."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T14:00:00Z", param_hint="--at") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no offset: add Z (UTC) or e.g. +02:00", param_hint="--at")
    return parsed.isoformat()


def _by(period: dict[str, Any]) -> str:
    if period["kind"] == "rollback":
        return f"rollback by {period['requested_by'] or 'unknown'}"
    return f"approved by {', '.join(period['approvers']) or period['requested_by'] or 'unknown'}"


def _line(group: str, stage: str, period: dict[str, Any], at: str | None) -> str:
    until = f"until {when(period['to'])}" if period["to"] else "and serves now"
    prefix = f"at {at}, {group} {stage} served" if at else f"{group} {stage} serves"
    return (f"{prefix} [green]{period['model_version_id']}[/] since {when(period['from'])} {until} "
            f"({period['kind']}, deployment {period['deployment_id']}, {_by(period)})")


def _table(periods: list[dict[str, Any]]) -> Table:
    table = Table(title="timeline (newest first, UTC)")
    for column in ("from", "to", "version", "kind", "who", "deployment", "artifact digest"):
        table.add_column(column)
    for p in periods:
        digest = (p["artifact_digest"] or "")[:19]
        table.add_row(when(p["from"]), when(p["to"]) or "[green]serving[/]", p["model_version_id"], p["kind"], _by(p),
                      p["deployment_id"][:8], digest)
    return table


def live(
    group: Annotated[str, typer.Argument(help="Model group.")],
    stage: Annotated[str, typer.Argument(help="Stage, e.g. prod.")],
    at: Annotated[str | None, typer.Option("--at", help="Which version served at this ISO 8601 time (with its offset, e.g. 2026-12-01T14:00:00Z).")] = None,
    history: Annotated[bool, typer.Option("--history/--no-history", help="Also print the stage's timeline.")] = True,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many periods of the timeline.")] = 20,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Which version serves STAGE of GROUP now (or served at --at), and the stage's timeline: every period a
    version served it, who approved it, rollout or rollback. Exits 4 when nothing served (then).

    [bold]Examples[/]
      modelgate live fraud-detector prod
      modelgate live fraud-detector prod --at 2026-11-30T23:00:00Z
      modelgate live fraud-detector prod --json | jq '.items[0].model_version_id'
    """
    asked = _time(at)
    page = run(_timeline(group, stage, asked, limit, token))
    if json_out:
        print_json(page)
        return
    periods = page["items"]
    if not periods or (asked is None and not periods[0]["live"]):
        console.print(f"nothing serves {group} {stage}")
    else:
        console.print(_line(group, stage, periods[0], asked))
    if history and asked is None and periods:
        console.print(_table(periods))
    if not periods:
        raise typer.Exit(ExitCode.NOT_FOUND)


async def _timeline(group: str, stage: str, at: str | None, limit: int, token: str) -> dict[str, Any]:
    async with clients(token) as mg:
        return await mg.deployer.timeline(group, stage, at=at, limit=limit)


def verify(
    group: Annotated[str | None, typer.Argument(help="Only this model group.")] = None,
    stage: Annotated[str | None, typer.Argument(help="Only this stage (with GROUP).")] = None,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Compare, for each stage, the Parameter Store pointer, the deployer's live record, the registrar's catalog
    (the version reading Deployed) and what the target itself serves (inference server, SageMaker endpoint, ECS
    task definition); print what disagrees. Exits 20 on drift, 0 when all agree.

    [bold]Examples[/]
      modelgate verify
      modelgate verify fraud-detector prod --json
    """
    stages = run(verify_stages(group, stage, token))
    if json_out:
        print_json(stages)
    else:
        _print_drift(stages)
    if any(s["drifted"] for s in stages):
        raise typer.Exit(ExitCode.DRIFT)


async def verify_stages(group: str | None, stage: str | None, token: str = "") -> list[dict[str, Any]]:
    """The deployer's drift report with the registrar's view of each stage added (and compared)."""
    from services.deployer.drift import compare
    from services.deployer.schemas import DriftView, StageDriftOut

    async with clients(token) as mg:
        result = []
        for each in [StageDriftOut.model_validate(s) for s in await mg.deployer.drift(group, stage)]:
            views = [*each.views, DriftView(**await _registrar_view(mg, each.group, each.stage))]
            result.append(compare(each.group, each.stage, views, each.deploying).model_dump(mode="json"))
    return result


async def _registrar_view(mg: Clients, group: str, stage: str) -> dict[str, Any]:
    """Which version(s) the catalog says are Deployed in the stage (exactly one, once the system settles)."""
    try:
        deployed = await mg.registrar.reading(group, stage, "Deployed")
    except ServiceError as exc:
        return {"source": "registrar", "model_version_id": None, "error": str(exc)}
    names = ", ".join(v["model_version_id"] for v in sorted(deployed, key=lambda v: v["version"])) or None
    detail = f"{len(deployed)} versions read Deployed" if len(deployed) > 1 else f"GET /v1/versions?group={group}&stage={stage}&stage_status=Deployed"
    return {"source": "registrar", "model_version_id": names, "detail": detail}


def _print_drift(stages: list[dict[str, Any]]) -> None:
    if not stages:
        console.print("the deployer knows no stage yet: nothing to verify")
        return
    table = Table(title="what serves each stage")
    for column in ("group", "stage", "live record", "pointer", "target", "registrar", ""):
        table.add_column(column)
    for s in stages:
        seen = {v["source"]: ("[dim]unknown[/]" if v["error"] else v["model_version_id"] or "–") for v in s["views"]}
        verdict = "[red]drift[/]" if s["drifted"] else "[yellow]deploying[/]" if s["deploying"] else "[green]ok[/]"
        table.add_row(s["group"], s["stage"], *(seen.get(k, "[dim]n/a[/]") for k in ("live", "pointer", "target", "registrar")), verdict)
    console.print(table)
    for s in stages:
        for line in s["disagreements"]:
            console.print(f"[red]✗[/] {s['group']} {s['stage']}: {line}", highlight=False)
        for v in s["views"]:
            if v["error"]:
                console.print(f"[yellow]?[/] {s['group']} {s['stage']}: could not read the {v['source']}: {v['error']}", highlight=False)
    drifted = sum(s["drifted"] for s in stages)
    console.print(f"{drifted} of {len(stages)} stages drift" if drifted else f"all {len(stages)} stages agree")
