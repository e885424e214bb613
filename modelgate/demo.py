"""`modelgate demo`: one model version's whole journey on LocalStack, printed as it happens."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import httpx
from rich.console import Console
from rich.table import Table

from modelgate import stack as stack_mod
from modelgate.stack import Stack
from shared.infra import boto_client
from shared.topology import bucket_name, parameter_name

console = Console()


def run_demo(stack: Stack, keep_running: bool = False, timeout: float = 60.0) -> bool:
    started = time.monotonic()
    already_up = all(stack_mod.running_pid(stack, s) for s in stack.ports)
    if not already_up:
        stack_mod.up(stack, progress=lambda m: console.print(f"[dim]•[/] {m}"))
    try:
        return _journey(stack, timeout)
    finally:
        if not already_up and not keep_running:
            stack_mod.down(stack, progress=lambda m: console.print(f"[dim]•[/] {m}"))
        console.print(f"total {time.monotonic() - started:.1f}s")


def _journey(stack: Stack, timeout: float) -> bool:
    group = f"fraud-detector-{uuid.uuid4().hex[:6]}"
    key = f"{group}/model.bin"
    s3 = boto_client("s3", stack.endpoint)
    s3.put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=b"demo model artifact")
    body = {
        "artifact_uri": f"s3://{bucket_name(stack.namespace)}/{key}",
        "registered_by": "ana@example.com",
        "metrics": {"auc": 0.93, "precision": 0.88, "recall": 0.81},
        "params": {"learning_rate": 0.15, "num_round": 100},
        "framework": "xgboost",
    }
    registrar = stack.url("registrar")
    response = httpx.post(f"{registrar}/v1/groups/{group}/versions", json=body, timeout=10)
    response.raise_for_status()
    version = response.json()
    console.print(f"registered [bold]{version['model_version_id']}[/] (auc 0.93)")
    history = _wait_for_deployed(registrar, group, version["version"], timeout)
    _print_journey(history)
    if not any(e["event_type"] == "Deployed" for e in history):
        console.print(f"[red]the journey did not reach Deployed(dev) within {timeout:.0f}s[/]")
        return False
    pointer = boto_client("ssm", stack.endpoint).get_parameter(Name=parameter_name(group, "dev"))["Parameter"]
    console.print(f"Parameter Store {pointer['Name']} = {json.dumps(json.loads(pointer['Value']), indent=2)}")
    final = httpx.get(f"{registrar}/v1/groups/{group}/versions/{version['version']}", timeout=10).json()
    console.print(f"approval status {final['approval_status']}, stages {final['stages']}")
    return True


def _wait_for_deployed(registrar: str, group: str, version: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    history: list[dict] = []
    while time.monotonic() < deadline:
        history = httpx.get(f"{registrar}/v1/groups/{group}/versions/{version}/history", timeout=10).json()
        types = [e["event_type"] for e in history]
        if "Deployed" in types and "ApprovalRequested" in types:
            return history
        time.sleep(0.1)
    return history


def _print_journey(history: list[dict]) -> None:
    table = Table(title="journey")
    for column in ("+ms", "event", "by", "stage", "detail"):
        table.add_column(column)
    if not history:
        console.print(table)
        return
    start = datetime.fromisoformat(history[0]["occurred_at"])
    for event in history:
        p = event["payload"]
        at = (datetime.fromisoformat(event["occurred_at"]) - start).total_seconds() * 1000
        detail = p.get("decision") or p.get("policy_rule") or p.get("parameter_name") or p.get("artifact_uri", "")
        table.add_row(f"{at:.0f}", event["event_type"], event["producer"], p.get("stage", ""), str(detail))
    console.print(table)
