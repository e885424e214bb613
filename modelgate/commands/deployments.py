"""Deployments: `rollback`."""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from typing import Annotated, Any

import typer

from modelgate.commands.common import (
    ExitCode,
    JsonOption,
    TokenOption,
    clients,
    console,
    fail,
    print_json,
    run,
)


def rollback(
    group: Annotated[str, typer.Argument(help="Model group.")],
    stage: Annotated[str, typer.Argument(help="The stage to put back to the version live before.")],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = None,
    token: TokenOption = "",
    wait: Annotated[bool, typer.Option(help="Wait until the previous version is live again.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 120.0,
    json_out: JsonOption = False,
) -> None:
    """Put STAGE of GROUP back to the version that was live before, through the deployer (needs the operator
    role for STAGE; the audit trail names your principal).

    [bold]Examples[/]
      modelgate rollback fraud-detector prod -r "precision alarm on the live traffic"
      modelgate rollback fraud-detector dev --no-wait --json
    """
    result = run(_rollback(group, stage, {"reason": reason}, wait, timeout, quiet=json_out, token=token))
    if json_out:
        print_json(result)


async def _rollback(group: str, stage: str, body: dict[str, Any], wait: bool, timeout: float,
                    quiet: bool, token: str = "") -> dict[str, Any]:
    async with clients(token) as mg:
        deployment = await mg.rollback(group, stage, body.get("reason"))
        if not quiet:
            console.print(f"rollback of {group} {stage} to {deployment.model_version_id} accepted "
                          f"(deployment {deployment.deployment_id})")
        if not wait:
            return deployment.model_dump(mode="json")
        deadline = time.monotonic() + timeout
        with console.status(f"rolling {stage} back to {deployment.model_version_id}…", spinner="dots") \
                if not quiet else nullcontext():
            while time.monotonic() < deadline and deployment.status in ("Pending", "Deploying"):
                await asyncio.sleep(0.5)
                deployment = await mg.deployment(deployment.deployment_id)
    if deployment.status == "Deployed":
        if not quiet:
            console.print(f"{stage} of {group} serves [green]{deployment.model_version_id}[/] again")
        return deployment.model_dump(mode="json")
    if deployment.status in ("Pending", "Deploying"):
        fail(f"the rollback of {group} {stage} did not finish within {timeout:.0f}s; follow it with "
             f"'modelgate versions {group}'", ExitCode.TIMEOUT)
    fail(f"the rollback of {group} {stage} ended {deployment.status}: {deployment.reason or 'no reason given'}")
