"""The catalog: `register`, `versions`, `show`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from modelgate.client import live_by_stage
from modelgate.commands.common import (
    JsonOption,
    TokenOption,
    clients,
    console,
    metrics_text,
    print_json,
    run,
    styled,
    when,
)
from modelgate.sdk import AsyncClient


def _pairs(values: list[str], what: str, number: bool = False) -> dict[str, Any]:
    """["auc=0.93", ...] -> {"auc": 0.93}; values are JSON when they parse (100, true), else text."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} should look like NAME=VALUE", param_hint=f"--{what}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if number and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise typer.BadParameter(f"{key} must be a number, e.g. --{what} {key}=0.93", param_hint=f"--{what}")
        result[key] = value
    return result


def _document(path: Path | None, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (model card, lineage, metrics)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=f"--{what}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a mapping (JSON object)", param_hint=f"--{what}")
    return data


def upload(mg: AsyncClient, path: Path, group: str) -> Awaitable[str]:
    """Uploads a local artifact through the SDK (content-addressed key, SHA-256 checksum), with a progress bar."""
    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)

    async def work() -> str:
        with progress:
            return await mg.upload(path, group, lambda sent: progress.advance(task, sent))

    return work()


def register(
    group: Annotated[str, typer.Argument(help="Model group, e.g. fraud-detector (created on first use).")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False, help="A local model file to upload.")
    ] = None,
    artifact: Annotated[str | None, typer.Option("--artifact", help="An artifact already in S3: s3://bucket/key.")] = None,
    comet_archive: Annotated[
        Path | None,
        typer.Option("--comet-archive", exists=True, dir_okay=False, help="The zip a comet_ml OfflineExperiment wrote."),
    ] = None,
    comet_experiment: Annotated[
        str | None, typer.Option(help="A Comet experiment's key or name (read by the registrar from Comet).")
    ] = None,
    comet_model: Annotated[str | None, typer.Option(help="A Comet registry model, instead of an experiment.")] = None,
    comet_model_version: Annotated[str | None, typer.Option(help="Its version (default: the latest).")] = None,
    comet_workspace: Annotated[str | None, typer.Option(help="The Comet workspace (with --comet-experiment/-model).")] = None,
    comet_project: Annotated[str | None, typer.Option(help="The Comet project (with --comet-experiment/-model).")] = None,
    metric: Annotated[list[str], typer.Option("--metric", "-m", help="NAME=NUMBER, repeatable.")] = [],  # noqa: B006
    metrics_file: Annotated[Path | None, typer.Option(help="JSON/YAML mapping of metric names to numbers.")] = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE, repeatable.")] = [],  # noqa: B006
    tag: Annotated[list[str], typer.Option("--tag", "-t", help="NAME=VALUE, repeatable.")] = [],  # noqa: B006
    framework: Annotated[str | None, typer.Option(help="e.g. xgboost, sklearn.")] = None,
    model_card: Annotated[
        Path | None,
        typer.Option(help="JSON/YAML model card (summary, intended_use, ...; plots in custom_details.plots)."),
    ] = None,
    lineage: Annotated[Path | None, typer.Option(help="JSON/YAML lineage (experiment_key, datasets).")] = None,
    metadata: Annotated[
        Path | None, typer.Option(help="JSON/YAML free-form metadata, kept as sent.")
    ] = None,
    description: Annotated[str, typer.Option(help="A line about this version.")] = "",
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key registers once (for scripts).")
    ] = None,
    token: TokenOption = "",
    json_out: JsonOption = False,
) -> None:
    """Register a new version of GROUP from a local file, an S3 URI, or a Comet experiment.

    A local file is uploaded to the artifact bucket (<namespace>-artifacts) first. From Comet, the registrar
    reads parameters, metrics, the logged model, datasets and plots (docs/comet.md); from an offline archive,
    or online from the Comet server the registrar is configured with.

    [bold]Examples[/]
      modelgate register fraud-detector --file model.ubj -m auc=0.93 -p num_round=100 --framework xgboost
      modelgate register fraud-detector --artifact s3://modelgate-artifacts/fraud/model.ubj -m auc=0.91
      modelgate register fraud-detector --comet-archive ./offline/3f2c.zip
      modelgate register fraud-detector --comet-workspace acme --comet-project fraud --comet-experiment 3f2c...
      modelgate register fraud-detector --file model.ubj --model-card card.yaml
      modelgate register fraud-detector --artifact s3://... -m auc=0.9 --idempotency-key "$CI_JOB_ID" --json
    """
    comet = comet_experiment or comet_model
    sources = [s for s in (file, artifact, comet_archive, comet) if s is not None]
    if len(sources) != 1:
        raise typer.BadParameter(
            "give exactly one of --file, --artifact, --comet-archive, --comet-experiment, --comet-model",
            param_hint="source",
        )
    if comet and not (comet_workspace and comet_project):
        raise typer.BadParameter("Comet needs --comet-workspace and --comet-project too", param_hint="--comet-*")
    metrics = {**_document(metrics_file, "metrics-file"), **_pairs(metric, "metric", number=True)}
    body: dict[str, Any] = {
        "metrics": metrics,
        "params": _pairs(param, "param"),
        "tags": {k: str(v) for k, v in _pairs(tag, "tag").items()},
        "framework": framework,
        "model_card": _document(model_card, "model-card"),
        "lineage": _document(lineage, "lineage"),
        "metadata": _document(metadata, "metadata"),
        "description": description,
    }
    # from Comet, metrics, params and lineage come from the experiment; the rest may be given here
    from_comet = {k: body[k] for k in ("framework", "description", "tags", "model_card") if body[k]}
    if comet_archive is not None:
        record = run(_call(lambda mg: mg.registrar.register_comet_archive(group, comet_archive, from_comet), token))
    elif comet is not None:
        online = {"workspace": comet_workspace, "project": comet_project, "experiment_key": comet_experiment,
                  "registry_model": comet_model, "registry_version": comet_model_version, **from_comet}
        record = run(_call(lambda mg: mg.registrar.register_from_comet(group, online), token))
    else:
        record = run(_register(group, file, artifact, body, idempotency_key, token))
    if json_out:
        print_json(record)
        return
    console.print(
        f"registered [bold]{record['model_version_id']}[/] ({record['artifact_uri']}); "
        f"follow it with: modelgate show {group} {record['version']}"
    )


async def _call(work: Callable[[AsyncClient], Awaitable[dict[str, Any]]], token: str = "") -> dict[str, Any]:
    async with clients(token) as mg:
        return await work(mg)


async def _register(group: str, file: Path | None, artifact: str | None, body: dict[str, Any],
                    idempotency_key: str | None, token: str) -> dict[str, Any]:
    async with clients(token) as mg:
        uri = artifact if artifact is not None else await upload(mg, file, group)  # type: ignore[arg-type]
        version = await mg.register(group, uri=uri, idempotency_key=idempotency_key, **body)
        return version.model_dump(mode="json")


def versions(
    group: Annotated[str, typer.Argument(help="Model group.")],
    json_out: JsonOption = False,
) -> None:
    """List the versions of GROUP: status per stage, what is live where, key metrics.

    [bold]Examples[/]
      modelgate versions fraud-detector
      modelgate versions fraud-detector --json | jq '.[] | select(.stages.prod == "Deployed") | .version'
    """
    records, live, stages = run(_versions(group))
    if json_out:
        print_json(records)
        return
    table = Table(title=f"{group}: {len(records)} version(s)")
    for column in ("version", "registered by", "registered at", "approval", *stages):
        table.add_column(column, no_wrap=True)
    table.add_column("live in")
    table.add_column("metrics", min_width=24)
    for record in records:
        live_in = [stage for stage, d in live.items() if d["model_version_id"] == record["model_version_id"]]
        table.add_row(
            str(record["version"]),
            record["registered_by"],
            when(record["created_at"])[:16],
            styled(record["approval_status"]),
            *(styled(record["stages"].get(stage)) for stage in stages),
            ", ".join(live_in),
            metrics_text(record["metrics"], limit=3),
        )
    console.print(table)


async def _versions(group: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    async with clients() as mg:
        records = await mg.registrar.versions(group)
        live = live_by_stage(await mg.deployer.deployments(group))
        stages = [stage["name"] for stage in await mg.approver.policy()]
    return records, live, stages


def show(
    group: Annotated[str, typer.Argument(help="Model group.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    json_out: JsonOption = False,
) -> None:
    """Show one version: status per stage, metrics, parameters, model card, lineage and its history.

    [bold]Examples[/]
      modelgate show fraud-detector 7
      modelgate show fraud-detector 7 --json | jq '.history[].event_type'
    """
    record, history = run(_show(group, version))
    if json_out:
        print_json({**record, "history": history})
        return
    console.print(
        Panel.fit(
            f"[bold]{record['model_version_id']}[/]  {styled(record['approval_status'])}\n"
            f"artifact      {record['artifact_uri']}\n"
            f"digest        {record.get('artifact_digest') or 'not pinned'}"
            f"{' (S3 version ' + record['artifact_version_id'] + ')' if record.get('artifact_version_id') else ''}\n"
            f"registered by {record['registered_by']} at {when(record['created_at'])} (source {record['source']})\n"
            f"framework     {record.get('framework') or '–'}",
            title="version",
        )
    )
    stages = Table(title="stages")
    for column in ("stage", "status", "since", "detail"):
        stages.add_column(column)
    for stage, details in (record.get("stage_details") or {}).items():
        stages.add_row(stage, styled(details["status"]), when(details.get("at")), stage_note(details))
    console.print(stages)
    console.print(_mapping_table("metrics", record["metrics"]))
    if record["params"]:
        console.print(_mapping_table("parameters", record["params"]))
    for title in ("model_card", "lineage", "metadata"):
        shown = {k: v for k, v in (record.get(title) or {}).items() if v not in ({}, [], None, "")}
        plots = (shown.get("custom_details") or {}).get("plots") if title == "model_card" else None
        if plots:  # the web console draws them
            names = ", ".join(str(p.get("name") or p.get("kind")) for p in plots if isinstance(p, dict))
            shown["custom_details"] = {**shown["custom_details"], "plots": f"{names} (drawn in the web console)"}
        if shown:
            text = yaml.safe_dump(shown, sort_keys=False, width=100).strip()
            console.print(Panel(text, title=title.replace("_", " "), expand=False))
    console.print(history_table(history))


async def _show(group: str, version: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with clients() as mg:
        return await mg.registrar.version(group, version), await mg.registrar.history(group, version)


def _mapping_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def history_table(history: list[dict[str, Any]]) -> Table:
    table = Table(title="history")
    for column in ("at", "event", "by", "stage", "detail"):
        table.add_column(column)
    for event in history:
        table.add_row(when(event["occurred_at"]), event["event_type"], event["producer"],
                      event["payload"].get("stage", ""), event_detail(event))
    return table


def stage_note(details: dict[str, Any]) -> str:
    """One stage's status explained in a few words (who replaced it, why it failed, where it serves)."""
    match details.get("status"):
        case "Superseded":
            return f"superseded by {details.get('superseded_by') or 'a newer version'}"
        case "Retired":
            return f"replaced by {details.get('replaced_by') or 'a newer version'}"
        case "RolledBack":
            return f"rolled back to {details.get('replaced_by') or 'an earlier version'}"
        case "Deploying":
            return ("rolling back" if details.get("rollback") else "deploying") + f" to {details.get('target') or 'its target'}"
        case "Deployed":
            return details.get("endpoint_url") or details.get("target") or ""
    return ", ".join(details.get("decided_by") or []) or str(details.get("reason") or "")


def event_detail(event: dict[str, Any]) -> str:
    p = event["payload"]
    match event["event_type"]:
        case "ModelRegistered":
            return f"by {p.get('registered_by')}: {p.get('artifact_uri')}"
        case "ApprovalRequested":
            return f"{p.get('policy_rule')} (approval {p.get('approval_id')})"
        case "ApprovalDecided":
            who = ", ".join(p.get("decided_by") or [])
            return f"{p.get('decision')} by {who}" + (f": {p['comment']}" if p.get("comment") else "")
        case "Deployed":
            note = " (rollback)" if p.get("rollback") else ""
            return f"{p.get('target')} {p.get('parameter_name')}{note}"
        case "DeploymentFailed":
            return str(p.get("reason"))
        case "DeploymentStarted":
            return ("rolling back" if p.get("rollback") else "deploying") + f" to {p.get('target')}"
        case "DeploymentSuperseded":
            return f"superseded by {p.get('superseded_by')}: never deployed"
    return ""
