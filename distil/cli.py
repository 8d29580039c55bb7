"""The ``distil`` command line. Sub-commands import their dependencies lazily so
``distil --help`` stays fast."""

from __future__ import annotations

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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
