"""The `modelgate` command line: `up`, `down`, `demo` here; the others in modelgate/commands/."""

from __future__ import annotations

import typer
from rich.console import Console

from modelgate import stack as stack_mod
from modelgate.commands import (
    catalog,
    decisions,
    deployments,
    dlq,
    events,
    history,
    principals,
    rollouts,
    webhooks,
)
from modelgate.stack import Stack, StackError

app = typer.Typer(
    help="modelgate: register, approve and deploy model versions.\n\n"
    "Services are found at $MODELGATE_<SERVICE>_URL (default 127.0.0.1:8081-8084), AWS at $AWS_ENDPOINT_URL "
    "(default LocalStack, 127.0.0.1:4566), names under $MODELGATE_NAMESPACE. Exit codes: docs/cli.md.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
console = Console()


def _progress(message: str) -> None:
    console.print(f"[dim]•[/] {message}")


@app.command()
def up(
    namespace: str = typer.Option("modelgate", envvar="MODELGATE_NAMESPACE", help="Prefix of queue and topic names."),
    replicas: int = typer.Option(1, min=1, max=5, help="Processes per service; above 1 they share a PostgreSQL "
                                 "database per service on 127.0.0.1:5432 (<namespace>_<service>, made if missing)."),
) -> None:
    """Start LocalStack and the four services in the background; returns when all are healthy.

    Replica k of a service answers HTTP 100 * (k - 1) above the service's port (registrar-2 on 8181); all
    replicas of a service take turns on its queue.

    Example: modelgate up
             modelgate up --replicas 2
    """
    try:
        stack_mod.up(Stack(namespace=namespace, replicas=replicas), progress=_progress)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print("[green]modelgate is up[/]; logs in var/log/, stop with 'modelgate down'")
    console.print(f"the admin's token is in {Stack(namespace=namespace).admin_token_file()} (the CLI uses it by itself); "
                  "add people with 'modelgate principals add NAME'")


@app.command()
def down(namespace: str = typer.Option("modelgate", envvar="MODELGATE_NAMESPACE")) -> None:
    """Stop what 'modelgate up' started (services, then LocalStack).

    Example: modelgate down
    """
    stack_mod.down(Stack(namespace=namespace), progress=_progress)


@app.command()
def demo(
    keep_running: bool = typer.Option(False, help="Leave the system running afterwards."),
) -> None:
    """Run one model version's journey end to end on LocalStack and print it.

    Example: modelgate demo
    """
    from modelgate.demo import run_demo

    try:
        ok = run_demo(Stack(), keep_running=keep_running)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    raise typer.Exit(0 if ok else 1)


for command in (
    catalog.register,
    catalog.versions,
    catalog.show,
    decisions.approvals,
    decisions.approve,
    decisions.reject,
    decisions.promote,
    deployments.rollback,
    history.live,
    history.verify,
    decisions.gate,
):
    app.command()(command)
app.add_typer(events.app, name="events")
app.add_typer(dlq.app, name="dlq")
app.add_typer(principals.app, name="principals")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(rollouts.app, name="rollout")


if __name__ == "__main__":
    app()
