"""The `modelgate` command line."""

from __future__ import annotations

import typer
from rich.console import Console

from modelgate import stack as stack_mod
from modelgate.stack import Stack, StackError

app = typer.Typer(help="modelgate: register, approve and deploy model versions.", no_args_is_help=True)
console = Console()


def _progress(message: str) -> None:
    console.print(f"[dim]•[/] {message}")


@app.command()
def up(
    namespace: str = typer.Option("modelgate", envvar="MODELGATE_NAMESPACE", help="Prefix of queue and topic names."),
) -> None:
    """Start LocalStack and the four services in the background; returns when all are healthy.

    Example: modelgate up
    """
    try:
        stack_mod.up(Stack(namespace=namespace), progress=_progress)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print("[green]modelgate is up[/]; logs in var/log/, stop with 'modelgate down'")


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


if __name__ == "__main__":
    app()
