"""Approvals and the deployment gate: `approvals`, `approve`, `reject`, `promote`, `gate`."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.client import find_token
from modelgate.commands.common import (
    ExitCode,
    JsonOption,
    TokenOption,
    clients,
    console,
    errors,
    fail,
    metrics_text,
    print_json,
    run,
    styled,
)
from modelgate.errors import WaitFailed, WaitTimeout
from modelgate.models import GateVerdict
from modelgate.sdk import AsyncClient


class Status(str, Enum):
    pending = "pending"
    decided = "decided"
    all = "all"


def _age(created_at: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def approvals(
    status: Annotated[Status, typer.Option(help="Which requests.")] = Status.pending,
    group: Annotated[str | None, typer.Option(help="Only this model group.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only the pending ones you may vote on.")] = False,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """List approval requests (pending ones by default), oldest first.

    [bold]Examples[/]
      modelgate approvals
      modelgate approvals --mine --token "$MODELGATE_TOKEN"
      modelgate approvals --stage prod --group fraud-detector
      modelgate approvals --status all --json | jq -r '.[].approval_id'
    """
    rows = run(_approvals(status.value, group, stage, token, mine))
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no {status.value} approvals")
        return
    pending = status is Status.pending
    table = Table(title=f"{len(rows)} {status.value} approval(s)")
    for column in ("approval id", "version", "stage", *(() if pending else ("status",))):
        table.add_column(column, no_wrap=True)
    for column in ("needs", "registered by", "age"):
        table.add_column(column)
    table.add_column("metrics", min_width=22)
    for a in rows:
        needs = f"{a['required_approvals']} of {a['approver_group'] or 'any group'}" if a["required_approvals"] else "policy"
        table.add_row(a["approval_id"], a["model_version_id"], a["stage"], *(() if pending else (styled(a["status"]),)),
                      needs, a["registered_by"], _age(a["created_at"]), metrics_text(a["metrics"], limit=2))
    console.print(table)
    if pending:
        console.print("decide with: modelgate approve <approval id>  |  modelgate reject <approval id> -c 'why'")


async def _approvals(status: str, group: str | None, stage: str | None, token: str, mine: bool) -> list[dict[str, Any]]:
    async with clients(token) as mg:
        return await mg.approver.approvals(status, group=group, stage=stage, approver="me" if mine else None)


def _print_decision(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(result)
        return
    where = f"{result['model_version_id']} for {result['stage']}"
    if result["status"] == "pending":
        votes = len(result.get("approved_by") or [])
        console.print(f"your approval of {where} is recorded ({votes} of {result['required_approvals']} distinct "
                      f"approvers from {result['approver_group'] or 'any group'}); it waits for the others")
    else:
        console.print(f"{where} is now {styled(result['status'])}")


def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval request (see 'modelgate approvals').")],
    token: TokenOption = "",
    comment: Annotated[str | None, typer.Option("--comment", "-c", help="Why (kept in the audit trail).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Approve a pending request, as the principal of your token.

    [bold]Examples[/]
      MODELGATE_TOKEN=... modelgate approve 0b5f...e1
      modelgate approve 0b5f...e1 --token "$TOKEN" -c "metrics hold on the holdout set"
    """
    _print_decision(run(_decide(approval_id, "approve", comment, _need(token))), json_out)


def reject(
    approval_id: Annotated[str, typer.Argument(help="The approval request (see 'modelgate approvals').")],
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why it is rejected (required).")],
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Reject a pending request; a rejection needs a comment saying why.

    [bold]Examples[/]
      modelgate reject 0b5f...e1 -c "recall dropped on the March cohort"
    """
    if not comment.strip():
        raise typer.BadParameter("say why the version is rejected", param_hint="--comment")
    _print_decision(run(_decide(approval_id, "reject", comment, _need(token))), json_out)


def _need(token: str) -> str:
    found = token or find_token()
    if not found:
        fail("this needs your modelgate token: pass --token or set MODELGATE_TOKEN", ExitCode.REFUSED)
    return found


async def _decide(approval_id: str, decision: str, comment: str | None, token: str) -> dict[str, Any]:
    async with clients(token) as mg:
        return await mg.approver.decide(approval_id, decision, comment)


def promote(
    group: Annotated[str, typer.Argument(help="Model group.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    to: Annotated[str | None, typer.Option("--to", help="The stage (default: the one waiting for approval).")] = None,
    token: TokenOption = "",
    comment: Annotated[str | None, typer.Option("--comment", "-c", help="Why (kept in the audit trail).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the stage is deployed.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 120.0,
    json_out: JsonOption = False,
) -> None:
    """Approve VERSION of GROUP for its next stage, then wait (with a spinner) until it is deployed there.

    The same as 'approve' on the version's pending request, found for you. When the stage needs more
    approvers, your vote is recorded and the command says how many are still needed.

    [bold]Examples[/]
      modelgate promote fraud-detector 7                 # the stage now waiting, usually test or prod
      modelgate promote fraud-detector 7 --to prod -c "signed off by risk committee"
      modelgate promote fraud-detector 7 --no-wait --json
    """
    result = run(_promote(group, version, to, _need(token), comment, wait, timeout, json_out))
    if json_out:
        print_json(result)


async def _promote(group: str, version: int, stage: str | None, token: str, comment: str | None, wait: bool,
                   timeout: float, json_out: bool) -> dict[str, Any]:
    async with clients(token) as mg:
        record = await mg.registrar.version(group, version)
        request = await _pending_request(mg, record, stage)
        decided = await mg.approver.decide(request["approval_id"], "approve", comment)
        if not json_out:
            _print_decision(decided, json_out=False)
        if not wait or decided["status"] != "Approved":
            return {"approval": decided, "stage_status": record["stages"].get(decided["stage"])}
        status = await _wait_for_deployment(mg, group, version, decided["stage"], timeout, quiet=json_out)
        return {"approval": decided, "stage_status": status}


async def _pending_request(mg: AsyncClient, record: dict[str, Any], stage: str | None) -> dict[str, Any]:
    pending = await mg.approver.approvals("pending", model_version_id=record["model_version_id"], stage=stage)
    if len(pending) == 1:
        return pending[0]
    stages = ", ".join(f"{s}={st}" for s, st in record["stages"].items()) or "none yet"
    if not pending:
        where = f" for {stage}" if stage else ""
        fail(f"{record['model_version_id']} has no pending approval{where} (its stages: {stages}); "
             "a stage is requested once the one before it is deployed", ExitCode.NOT_FOUND)
    fail(f"{record['model_version_id']} waits in several stages ({', '.join(a['stage'] for a in pending)}): "
         "say which with --to", ExitCode.USAGE)


async def _wait_for_deployment(mg: AsyncClient, group: str, version: int, stage: str, timeout: float,
                               quiet: bool) -> str:
    with console.status(f"deploying {group}/{version} to {stage}…", spinner="dots") if not quiet else nullcontext():
        try:
            await mg.wait(group, version, stage, until="Deployed", timeout=timeout)
        except WaitFailed as exc:
            if exc.status != "Retired":
                fail(str(exc))
            if not quiet:  # it went live, and a newer version has replaced it already
                console.print(f"{group}/{version} was deployed to {stage}, and is [dim]Retired[/] there already")
            return "Retired"
        except WaitTimeout as exc:
            fail(str(exc), ExitCode.TIMEOUT)
    if not quiet:
        console.print(f"{group}/{version} is [green]Deployed[/] to {stage}")
    return "Deployed"


def gate(
    group: Annotated[str, typer.Argument(help="Model group.")],
    stage: Annotated[str, typer.Argument(help="The stage your pipeline is about to deploy to.")],
    version: Annotated[int | None, typer.Option(help="Version number (default: the group's latest).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Exit 0 only when the version is approved for STAGE (its status there is Approved, Deploying or Deployed).

    The check a CI/CD pipeline runs before it deploys by itself. Otherwise it prints why not and exits
    10 (waiting for approval), 11 (rejected, or rolled back from), 12 (not put up for that stage yet),
    13 (approved but its deployment failed), 14 (superseded: a newer version took the stage first),
    15 (retired: it served the stage, a newer version replaced it), 4 (no such group/version) or 3
    (modelgate unreachable).

    [bold]Examples[/]
      modelgate gate fraud-detector prod --version 7 && ./deploy.sh
      modelgate gate fraud-detector prod --json
    """
    found = run(_gate(group, stage, version))
    if json_out:
        print_json({"model_version_id": found.model_version_id, "stage": stage, "status": found.status,
                    "approved": found.open, "exit_code": int(found.code), "reason": found.reason})
    elif found.open:
        console.print(f"[green]open:[/] {found.reason}")
    else:
        errors.print(f"[red]closed:[/] {found.reason}", highlight=False)
    raise typer.Exit(int(found.code))


async def _gate(group: str, stage: str, version: int | None) -> GateVerdict:
    async with clients() as mg:
        return await mg.gate(group, stage, version)
