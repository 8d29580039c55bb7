"""``make demo``: a real DistIL job on CPU, from a fresh machine, with a before/after table.

Starts the embedded stack (Redis, Ray, Serve, the gateway), writes the generated task
splits, submits a DistIL job on the packaged SmolLM2-135M-Instruct with execution feedback
through all four services and the bus, shows progress, prints held-out success before and
after training, and writes a PNG of the training curves.

    python -m distil.demo.run [--steps 12] [--seed 0] [--objective distil]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distil.demo.tasks import make_split
from distil.paths import data_dir

DEMO_ENGINE = {"enforce_eager": True, "kv_cache_gib": 0.5, "max_model_len": 512, "max_logprobs": 20}
# DistIL's future-credit term is a score-function estimate; with 4 samples per prompt and a
# few steps, centring it on the group mean (unbiased) keeps the updates from raising entropy.
OBJECTIVE_EXTRAS: dict[str, dict[str, Any]] = {"distil": {"credit_baseline": "group_mean"}}
EVAL_KEYS = ("score/pass@1", "score/pass@4", "accuracy/avg", "score/maj@4")


def write_splits(root: Path, seed: int) -> tuple[Path, Path]:
    train, held = make_split(seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = root / "train.jsonl", root / "heldout.jsonl"
    for path, tasks in zip(paths, (train, held), strict=True):
        path.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    return paths


def demo_spec(
    train: Path, held: Path, *, steps: int, seed: int, objective: str = "distil", **overrides
) -> dict:
    """The demo job: 4 prompts x 4 samples per step, 96 new tokens, evaluation before and after."""
    spec: dict[str, Any] = {
        "name": f"demo-{objective}-s{seed}",
        "model": "smollm2-135m-instruct",
        "dataset": {"kind": "jsonl", "path": str(train), "eval_path": str(held)},
        "objective": {"name": objective, **OBJECTIVE_EXTRAS.get(objective, {})},
        "feedback": {"sources": [{"kind": "environment"}, {"kind": "reference"}]},
        # The teacher sees the execution feedback and the reference solution together.
        "teacher": {"kind": "self_ema", "template": {"feedback_only_without_solution": False}},
        "rollout": {"n": 4, "temperature": 0.7, "max_tokens": 96},
        "steps": steps,
        "seed": seed,
        "evaluation": {
            "every_steps": 0,
            "at_start": True,
            "at_end": True,
            "k": 8,
            "temperature": 0.6,
            "max_tokens": 96,
            "max_problems": None,
        },
        # one checkpoint on disk (~2 GB for the 135M model: weights, optimizer, EMA teacher)
        "checkpoint": {"every_steps": max(steps // 2, 1), "keep_last": 1},
        "engine": dict(DEMO_ENGINE),
        "training": {"lr": 3e-5, "token_budget": 2048, "activation_checkpointing": True},
        "learner": {"groups_per_step": 4, "max_staleness": 1},
    }
    spec.update(overrides)
    return spec


class Stack:
    """The embedded stack in a background thread of this process."""

    def __init__(self, port: int, console: Console):
        from distil.gateway import stack

        self.ready, self.stop = threading.Event(), threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                stack.up("127.0.0.1", port, num_cpus=8, num_gpus=0, ready=self.ready, stop=self.stop,
                         log=lambda m: console.log(m))  # fmt: skip
            except BaseException as exc:  # surfaced by wait_ready
                self.error = exc
                self.ready.set()

        self.thread = threading.Thread(target=run, name="distil-stack", daemon=True)
        self.thread.start()

    def wait_ready(self, timeout_s: float = 900.0) -> None:
        if not self.ready.wait(timeout_s):
            raise TimeoutError(
                f"the stack (Redis, Ray, Serve, gateway) did not come up within {timeout_s:.0f}s"
            )
        if self.error is not None:
            raise RuntimeError(f"the stack failed to start: {self.error}") from self.error

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=300)


def follow(client, job_id: str, steps: int, console: Console, timeout_s: float) -> dict:
    """Poll the job with a progress bar until it ends; returns the final job record."""
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"job {job_id}", total=steps, info="starting the stages")
        while True:
            job = client.request("GET", f"/v1/jobs/{job_id}")
            latest = job.get("last_metrics") or {}
            info = job["state"]
            if latest:
                info = (f"{job['state']}  reward {latest.get('reward_mean', 0):.2f}  "
                        f"success {latest.get('success_rate', 0):.2f}  loss {latest.get('loss', 0):.3f}")  # fmt: skip
            progress.update(bar, completed=job.get("step", 0), info=info)
            if job["state"] in ("completed", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:.0f}s")
            time.sleep(2.0)


def before_after(points: list[dict]) -> tuple[dict, dict]:
    evals = sorted((p for p in points if p["kind"] == "eval"), key=lambda p: p["step"])
    if len(evals) < 2:
        raise RuntimeError(f"expected an evaluation before and after training, got {len(evals)}")
    return evals[0], evals[-1]


def print_table(console: Console, before: dict, after: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("held-out metric")
    table.add_column(f"before (step {before['step']})", justify="right")
    table.add_column(f"after (step {after['step']})", justify="right")
    table.add_column("change", justify="right")
    for key in EVAL_KEYS:
        if key in before and key in after:
            table.add_row(key, f"{before[key]:.3f}", f"{after[key]:.3f}", f"{after[key] - before[key]:+.3f}")
    console.print(table)


def run_job(client, spec: dict, console: Console, out_dir: Path, timeout_s: float = 3600.0) -> dict:
    """Submit ``spec``, follow it, print the before/after table, write the PNG; returns a summary."""
    from distil.gateway.plot import plot_metrics

    job_id = client.request("POST", "/v1/jobs", json=spec)["id"]
    job = follow(client, job_id, spec["steps"], console, timeout_s)
    if job["state"] != "completed":
        raise RuntimeError(f"job {job_id} {job['state']}: {job.get('reason')}")
    points = client.request("GET", f"/v1/jobs/{job_id}/metrics")["points"]
    before, after = before_after(points)
    print_table(
        console, before, after, f"{spec['name']}: {spec['objective']['name']} on SmolLM2-135M-Instruct"
    )
    png = plot_metrics(points, out_dir / f"{spec['name']}.png", title=spec["name"])
    console.print(f"training curves: {png}")
    summary = {"job": job_id, "spec": spec, "before": before, "after": after, "png": str(png)}
    (out_dir / f"{spec['name']}.json").write_text(json.dumps(summary, indent=2))
    return summary


def cancel_leftovers(client, console: Console, prefixes: tuple[str, ...] = ("demo-", "compare-")) -> None:
    """A demo (or bench/compare.py) interrupted earlier left its job active in the persisted
    job store; the gateway would resume it first and queue this one behind it. Cancel it
    instead, and say so."""
    for job in client.request("GET", "/v1/jobs")["jobs"]:
        if job["state"] in ("queued", "starting", "running") and str(job.get("name", "")).startswith(
            prefixes
        ):
            client.request("POST", f"/v1/jobs/{job['id']}/cancel")
            console.print(
                f"cancelled {job['id']} ({job['name']}, {job['state']}) left by an interrupted demo"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objective", default="distil")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args()
    console = Console()
    out_dir = data_dir() / "demo"
    train, held = write_splits(out_dir / "tasks", seed=0)
    console.print(f"tasks: {train} and held-out {held} (generated, see docs/demo.md)")
    stack = Stack(args.port, console)
    try:
        stack.wait_ready()
        from distil.gateway.client import GatewayClient

        client = GatewayClient(f"http://127.0.0.1:{args.port}", timeout_s=60)
        cancel_leftovers(client, console)
        run_job(client, demo_spec(train, held, steps=args.steps, seed=args.seed, objective=args.objective),
                console, out_dir)  # fmt: skip
    finally:
        stack.close()


if __name__ == "__main__":
    main()
