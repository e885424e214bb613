"""Rollouts: `rollout status|pause|resume|abort GROUP STAGE` (the deployer's /v1/groups/.../rollout routes)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.commands.common import JsonOption, TokenOption, clients, console, print_json, run

app = typer.Typer(help="Watch and steer a stage's rollout (canary, linear, shadow).", no_args_is_help=True)

Group = Annotated[str, typer.Argument(help="Model group.")]
StageArg = Annotated[str, typer.Argument(help="The stage rolling out.")]


async def _rollout(group: str, stage: str, action: str | None, token: str) -> dict[str, Any]:
    async with clients(token) as mg:
        return await mg.deployer.rollout(group, stage, action)


def _show(rollout: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(rollout)
        return
    mode = "mirrored" if rollout["strategy"] == "shadow" else "of the traffic"
    console.print(f"{rollout['model_version_id']} in {rollout['stage']}: [bold]{rollout['status']}[/], {rollout['strategy']} "
                  f"step {rollout['step']} of {rollout['steps']}, {rollout['share']:g} % {mode}; "
                  f"{rollout['live_model_version_id'] or 'nothing'} serves the rest")
    if rollout.get("reason"):
        console.print(f"reason: {rollout['reason']}")
    if rollout.get("abort_requested_by") and rollout["status"] in ("Baking", "Paused"):
        console.print(f"abort asked by {rollout['abort_requested_by']}: the deployer rolls it back at its next evaluation")
    table = Table("guardrail", "value", title=f"guardrails at {rollout.get('evaluated_at') or 'no evaluation yet'}")
    for name, value in sorted((rollout.get("evaluation") or {}).items()):
        table.add_row(name, "n/a" if value is None else f"{value:.4g}")
    console.print(table)


@app.command()
def status(group: Group, stage: StageArg, token: TokenOption = "", json_out: JsonOption = False) -> None:
    """Show the newest rollout of STAGE: status, step, share, and the guardrails' last values.

    [bold]Example[/]
      modelgate rollout status fraud-detector prod
    """
    _show(run(_rollout(group, stage, None, token)), json_out)


@app.command()
def pause(group: Group, stage: StageArg, token: TokenOption = "", json_out: JsonOption = False) -> None:
    """Pause the rollout of STAGE: the new version keeps its share, no step ends; guardrails still watch and
    still roll back (needs the operator role for STAGE).

    [bold]Example[/]
      modelgate rollout pause fraud-detector prod
    """
    _show(run(_rollout(group, stage, "pause", token)), json_out)


@app.command()
def resume(group: Group, stage: StageArg, token: TokenOption = "", json_out: JsonOption = False) -> None:
    """Resume a paused rollout of STAGE: its step's bake goes on where it was (operator role).

    [bold]Example[/]
      modelgate rollout resume fraud-detector prod
    """
    _show(run(_rollout(group, stage, "resume", token)), json_out)


@app.command()
def abort(group: Group, stage: StageArg, token: TokenOption = "", json_out: JsonOption = False) -> None:
    """Abort the rollout of STAGE: the live version takes 100 % again and the new one is retired (status
    Aborted; operator role). The pointer never moved.

    [bold]Example[/]
      modelgate rollout abort fraud-detector prod
    """
    _show(run(_rollout(group, stage, "abort", token)), json_out)
