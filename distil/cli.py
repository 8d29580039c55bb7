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


@app.command()
def doctor(
    bench: Annotated[
        bool, typer.Option(help="run the ~20 s micro-benchmark and estimate the demo's time")
    ] = True,
    model: Annotated[str, typer.Option(help="model the micro-benchmark times")] = "smollm2-135m-instruct",
) -> None:
    """What this machine is and what each part will run in: CPU capability, native bf16,
    the dtype of every engine and the learner, cores, memory, sandbox isolation, and how
    long `make demo` should take here."""
    from rich.console import Console

    from distil.doctor import micro_benchmark, print_report

    print_report(Console(), micro_benchmark(model) if bench else None)


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


# ---------------------------------------------------------------------- the stack and jobs


def _client():
    from distil.gateway.client import GatewayClient

    try:
        return GatewayClient()
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _call(fn):
    from distil.gateway.client import GatewayError

    try:
        return fn()
    except GatewayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address the HTTP API listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port of the API")] = 8000,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs Ray may use (default: all)")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs Ray may use (default: all)")] = None,
    throughput_optimized: Annotated[
        bool | None,
        typer.Option(
            "--throughput-optimized/--no-throughput-optimized",
            help="Serve's throughput-optimized mode, RAY_SERVE_THROUGHPUT_OPTIMIZED (default: on)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the whole stack here (embedded Redis, local Ray, Serve, the gateway) in the
    foreground; Ctrl-C or `distil down` stops it."""
    from distil.gateway.stack import up as start

    mode = {} if throughput_optimized is None else {"throughput_optimized": throughput_optimized}
    try:
        start(host, port, num_cpus, num_gpus, log=typer.echo, **mode)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="placement file (deploy/serve/*.yaml)", dir_okay=False)
    ],
    host: Annotated[str | None, typer.Option(help="override the file's http_options.host")] = None,
    port: Annotated[int | None, typer.Option(help="override the file's http_options.port")] = None,
    print_serve_config: Annotated[
        bool,
        typer.Option("--print-serve-config", help="print the Ray Serve part (KubeRay serveConfigV2), exit"),
    ] = False,
) -> None:
    """Start the stack from a placement file (Ray Serve config + distil section) in the
    foreground: the container's entrypoint. Ctrl-C or `distil down` stops it."""
    from distil.gateway.serve_config import ServeConfigError, dump_serve_config, load, serve

    try:
        cfg = load(config)
        if print_serve_config:
            typer.echo(dump_serve_config(cfg), nl=False)
            return
        serve(cfg, host=host, port=port, log=typer.echo)
    except (ServeConfigError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1 if isinstance(exc, RuntimeError) else 2) from exc


@app.command()
def down() -> None:
    """Stop the stack started by `distil up`."""
    from distil.gateway.stack import down as stop

    typer.echo("stopped" if stop() else "no stack is running")


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="job spec (YAML or JSON)")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then show progress until it ends")] = False,
) -> None:
    """Submit a job; prints its id."""
    client = _client()
    job = _call(lambda: client.submit(file))
    typer.echo(job["id"])
    if follow:
        _follow(client, job["id"], job.get("steps") or 0)


@app.command()
def status(job: Annotated[str | None, typer.Argument(help="a job id; none = all jobs")] = None) -> None:
    """List jobs, or show one job with its latest metrics."""
    from rich.console import Console
    from rich.table import Table

    client = _client()
    console = Console()
    if job is None:
        jobs = _call(lambda: client.request("GET", "/v1/jobs"))["jobs"]
        table = Table("id", "name", "state", "step", "reason")
        for j in jobs:
            table.add_row(j["id"], j["name"] or "", j["state"], f"{j['step']}/{j['steps']}", j["reason"][:80])
        console.print(table)
        return
    d = _call(lambda: client.request("GET", f"/v1/jobs/{job}"))
    console.print(
        f"[bold]{d['id']}[/bold] {d['state']}  step {d['step']}/{d['steps']}  policy v{d['policy_version']}"
    )
    if d["reason"]:
        console.print(f"reason: {d['reason']}")
    for title, m in (("last step", d.get("last_metrics")), ("last eval", d.get("last_eval"))):
        if m:
            table = Table(title=title)
            table.add_column("metric")
            table.add_column("value", justify="right")
            for k, v in sorted(m.items()):
                if k not in ("kind", "ts"):
                    table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
            console.print(table)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="job id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming until the job ends")] = False,
) -> None:
    """Print a job's events (state changes, steps, checkpoints, evaluations)."""
    import json

    client = _client()
    if follow:
        steps = _call(lambda: client.request("GET", f"/v1/jobs/{job}")).get("steps") or 0
        _follow(client, job, steps)
        return
    for kind, data in _call(lambda: list(client.events(job, follow=False))):
        typer.echo(f"{kind:<12} {json.dumps(data)}")


def _follow(client, job_id: str, steps: int) -> None:
    """Stream a job's events with a progress bar of training steps until the job ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from distil.gateway.client import GatewayError

    nan = float("nan")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as progress:
        bar = progress.add_task(job_id, total=steps or None)
        try:
            for kind, data in client.events(job_id, follow=True):
                if kind == "step":
                    m = data.get("metrics", {})
                    progress.update(bar, completed=data["step"])
                    progress.console.print(
                        f"step {data['step']}: loss {m.get('loss', nan):.4g}  reward {m.get('reward_mean', nan):.3f}"
                        f"  success {m.get('success_rate', nan):.3f}"
                    )
                elif kind == "state":
                    progress.console.print(f"[bold]{data['state']}[/bold] {data.get('reason', '')}")
                else:
                    progress.console.print(f"{kind}: {data}")
        except GatewayError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="job id")]) -> None:
    """Cancel a job (queued: at once; running: its driver stops the learner and the stages)."""
    client = _client()
    j = _call(lambda: client.request("POST", f"/v1/jobs/{job}/cancel"))
    typer.echo(f"{j['id']}: {j['state']}{' (cancel requested)' if j['cancel_requested'] else ''}")


@app.command()
def plot(
    job: Annotated[str, typer.Argument(help="job id")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG path (default: <job>.png)")] = None,
) -> None:
    """Write a PNG of the reward, success, loss, KL and evaluation curves of a job."""
    from distil.gateway.plot import plot_metrics

    client = _client()
    points = _call(lambda: client.request("GET", f"/v1/jobs/{job}/metrics"))["points"]
    path = plot_metrics(points, out or Path(f"{job}.png"), title=job)
    typer.echo(str(path))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
