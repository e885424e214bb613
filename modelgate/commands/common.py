"""What every command shares: exit codes, output (tables for people, --json for scripts), errors that say
what to do, and where the services and the AWS endpoint are."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import typer
from botocore.exceptions import ClientError, EndpointConnectionError
from rich.console import Console

from modelgate.client import ApiError, ServiceError, Unreachable
from modelgate.runenv import DEFAULT_NAMESPACE, LOCAL_ENDPOINT
from modelgate.sdk import AsyncClient
from shared.infra import boto_client

T = TypeVar("T")

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class ExitCode(IntEnum):
    """What a script can rely on (documented in docs/cli.md)."""

    OK = 0
    ERROR = 1  # unexpected failure, or a service answered 5xx
    USAGE = 2  # bad command line (typer's own code)
    UNREACHABLE = 3  # a service or AWS endpoint did not answer: is modelgate up?
    NOT_FOUND = 4  # no such group, version, approval, queue
    REFUSED = 5  # 401/403: missing or unknown token, not in the approver group, own version
    INVALID = 6  # 400/409/422: the request was refused as invalid or conflicting (already decided, ...)
    TIMEOUT = 7  # --wait gave up before the journey got there
    GATE_PENDING = 10  # gate: the version waits for approval in that stage
    GATE_REJECTED = 11  # gate: the version was rejected for that stage
    GATE_NOT_REQUESTED = 12  # gate: the version has not reached that stage (an earlier stage is not done)
    GATE_DEPLOYMENT_FAILED = 13  # gate: approved, but its deployment to that stage failed
    GATE_SUPERSEDED = 14  # gate: a newer version took that stage first; this one will never serve it
    GATE_RETIRED = 15  # gate: it served that stage, and a newer version has replaced it since
    DRIFT = 20  # verify: what serves a stage disagrees with what modelgate records


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
TokenOption = Annotated[
    str,
    typer.Option(
        "--token", envvar="MODELGATE_TOKEN", show_default=False,
        help="Your modelgate API token or OIDC JWT (or set MODELGATE_TOKEN; locally: var/<namespace>-admin.token).",
    ),
]


#: How the clients reach the services; None is the network. Tests put in-memory services here.
transport: httpx.AsyncBaseTransport | None = None


def clients(token: str | None = None) -> AsyncClient:
    """The SDK's client a command talks to (modelgate.sdk), with `token` or else the credential found by
    shared.client.find_token (MODELGATE_TOKEN, then the local admin token file)."""
    return AsyncClient(transport=transport, token=token or None, namespace=namespace(), aws_endpoint=aws_endpoint() or "")


def namespace() -> str:
    return os.environ.get("MODELGATE_NAMESPACE", DEFAULT_NAMESPACE)


def aws_endpoint() -> str | None:
    """$AWS_ENDPOINT_URL, LocalStack's default when unset (as `make up` runs it); empty means real AWS."""
    return os.environ.get("AWS_ENDPOINT_URL", LOCAL_ENDPOINT) or None


def aws(service: str) -> Any:
    return boto_client(service, aws_endpoint())


def fail(message: str, code: ExitCode = ExitCode.ERROR) -> NoReturn:
    errors.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _api_exit_code(error: ApiError) -> ExitCode:
    if error.status == 404:
        return ExitCode.NOT_FOUND
    if error.status in (401, 403):
        return ExitCode.REFUSED
    if 400 <= error.status < 500:
        return ExitCode.INVALID
    return ExitCode.ERROR


@contextmanager
def explained() -> Iterator[None]:
    """Turns failures into a one-line message saying what to do, and the matching exit code."""
    try:
        yield
    except Unreachable as exc:
        fail(str(exc), ExitCode.UNREACHABLE)
    except ApiError as exc:
        hint = " (pass --token or set MODELGATE_TOKEN; an admin makes one with 'modelgate principals add')" \
            if exc.status == 401 else ""
        fail(f"{exc}{hint}", _api_exit_code(exc))
    except ServiceError as exc:
        fail(str(exc))
    except EndpointConnectionError as exc:
        fail(f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}; is modelgate up? run 'make up'", ExitCode.UNREACHABLE)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistent" in code or "NotFound" in code or "NoSuch" in code or "DoesNotExist" in code:
            fail(
                f"{exc.response['Error'].get('Message') or code} in namespace '{namespace()}'; "
                "is modelgate up (run 'make up'), and is MODELGATE_NAMESPACE right?",
                ExitCode.NOT_FOUND,
            )
        fail(f"AWS refused: {exc}")


def run(work: Coroutine[Any, Any, T]) -> T:
    """Runs one command's async work with its failures explained."""
    with explained():
        return asyncio.run(work)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def when(value: str | None) -> str:
    """A timestamp for people: 2026-11-22 05:46:09 (UTC)."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {
    "Deployed": "green",
    "Approved": "green",
    "PendingApproval": "yellow",
    "PendingManualApproval": "yellow",
    "pending": "yellow",
    "Rejected": "red",
    "Superseded": "dim",
    "Deploying": "yellow",
    "Retired": "dim",
    "RolledBack": "red",
    "DeploymentFailed": "red",
}


def styled(status: str | None) -> str:
    if not status:
        return "[dim]–[/]"
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def metrics_text(metrics: dict[str, float], limit: int = 4) -> str:
    items = list(metrics.items())
    text = ", ".join(f"{k}={v:.4g}" for k, v in items[:limit])
    return text + (", …" if len(items) > limit else "")
