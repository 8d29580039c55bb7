"""The ``distil`` command line. Sub-commands import their dependencies lazily so
``distil --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="distil",
    help="distil: RL of language models from rich feedback (DistIL and baselines).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """distil: RL of language models from rich feedback."""


@app.command()
def version() -> None:
    """Print the installed version."""
    from distil import __version__

    typer.echo(__version__)


@app.command("exec")
def exec_(
    program: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Python program to run")],
    stdin: Annotated[
        Path | None, typer.Option("--stdin", exists=True, dir_okay=False, help="file fed to stdin")
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="wall-clock seconds, from exec")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="memory limit in MiB")] = None,
    require_isolation: Annotated[
        bool, typer.Option(help="refuse to run without namespace isolation")
    ] = False,
) -> None:
    """Run PROGRAM in the sandbox and print one JSON result."""
    from services.feedback.sandbox import SandboxConfig, SandboxUnavailable, make_sandbox

    try:
        sandbox = make_sandbox(SandboxConfig(slots=1, require_isolation=require_isolation))
    except SandboxUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    result = sandbox.run(
        program.read_bytes(),
        stdin=stdin.read_bytes() if stdin is not None else None,
        timeout_s=timeout,
        memory_mb=memory_mb,
    )
    typer.echo(result.model_dump_json(indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
