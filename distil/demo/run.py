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
from distil.demo.watch import StallWatch, awaited, first_budget, stall_message
from distil.hardware import detect
from distil.paths import data_dir
from distil.timeline import job_timeline

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


def follow(client, job_id: str, steps: int, console: Console, watch: StallWatch | None = None,
           failures: list[dict] | None = None) -> dict:  # fmt: skip
    """Poll the job with a progress bar until it ends; returns the final job record.

    Prints each held-out evaluation and each evaluation failure as it happens (appending the
    failures to ``failures``). Fails, and cancels the job, when no step or evaluation came
    within ``watch``'s limit, naming what it waited for and the slowest stage."""
    watch = watch or StallWatch(time.monotonic())
    failures = failures if failures is not None else []
    timeline = job_timeline(job_id)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())  # fmt: skip
    seq, step, evals = 0, 0, 0
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"job {job_id}", total=steps, info="starting the stages")
        while True:
            job = client.request("GET", f"/v1/jobs/{job_id}")
            now = time.monotonic()
            for kind, data in client.events(job_id, follow=False, after=seq):
                seq = max(seq, int(data.get("seq", seq)))
                if kind == "eval":
                    evals += 1
                    watch.progress(now)
                    m = data.get("metrics", {})
                    console.print(f"held-out evaluation at step {data['step']}: "
                                  + "  ".join(f"{k} {m[k]:.3f}" for k in EVAL_KEYS if k in m))  # fmt: skip
                elif kind == "eval_failed":
                    failures.append(data)
                    watch.progress(now)
                    console.print(
                        f"[bold red]held-out evaluation at step {data['step']} failed:[/] {data['error']}"
                    )
            if job.get("step", 0) > step:
                step = job["step"]
                watch.progress(now)
            latest = job.get("last_metrics") or {}
            info = job["state"]
            if latest:
                info = (f"{job['state']}  reward {latest.get('reward_mean', 0):.2f}  "
                        f"success {latest.get('success_rate', 0):.2f}  loss {latest.get('loss', 0):.3f}")  # fmt: skip
            progress.update(bar, completed=step, info=info)
            if job["state"] in ("completed", "failed", "cancelled"):
                return job
            if watch.stalled(now):
                message = stall_message(job_id, awaited(job["state"], step, steps, evals), now - watch.last,
                                        watch, timeline)  # fmt: skip
                client.request("POST", f"/v1/jobs/{job_id}/cancel")
                raise TimeoutError(message)
            time.sleep(2.0)


def before_after(points: list[dict]) -> tuple[dict | None, dict | None]:
    """The evaluation before training (step 0) and the last one after it; None where missing."""
    evals = sorted((p for p in points if p["kind"] == "eval"), key=lambda p: p["step"])
    before = next((p for p in evals if p["step"] == 0), None)
    after = evals[-1] if evals and evals[-1]["step"] > 0 else None
    return before, after


def missing_sides(before: dict | None, after: dict | None, failures: list[dict]) -> list[str]:
    """Why a side of the before/after table is empty, in words (nothing when both are there)."""
    out = []
    for side, point, at_start in (("before", before, True), ("after", after, False)):
        if point is None:
            failed = [f for f in failures if (f["step"] == 0) == at_start]
            why = f"the evaluation at step {failed[-1]['step']} failed: {failed[-1]['error']}" if failed else (
                "no evaluation was recorded")  # fmt: skip
            out.append(f"{side} training: missing ({why})")
    return out


def print_table(console: Console, before: dict | None, after: dict | None, title: str,
                failures: list[dict] = ()) -> None:  # fmt: skip
    table = Table(title=title)
    table.add_column("held-out metric")
    table.add_column("before" + (f" (step {before['step']})" if before else ": missing"), justify="right")
    table.add_column("after" + (f" (step {after['step']})" if after else ": missing"), justify="right")
    table.add_column("change", justify="right")
    for key in EVAL_KEYS:
        b = before.get(key) if before else None
        a = after.get(key) if after else None
        if a is None and b is None:
            continue
        table.add_row(key, "-" if b is None else f"{b:.3f}", "-" if a is None else f"{a:.3f}",
                      "-" if a is None or b is None else f"{a - b:+.3f}")  # fmt: skip
    console.print(table)
    for line in missing_sides(before, after, list(failures)):
        console.print(f"[bold red]{line}[/]")


def run_job(client, spec: dict, console: Console, out_dir: Path, watch: StallWatch | None = None) -> dict:
    """Submit ``spec``, follow it, print the before/after table, write the PNG; returns a summary.
    Raises after printing when the job failed or a side of the table is missing."""
    from distil.gateway.plot import plot_metrics

    job_id = client.request("POST", "/v1/jobs", json=spec)["id"]
    t0 = time.monotonic()
    failures: list[dict] = []
    job = follow(client, job_id, spec["steps"], console, watch, failures)
    if job["state"] != "completed":
        raise RuntimeError(f"job {job_id} {job['state']}: {job.get('reason')}")
    points = client.request("GET", f"/v1/jobs/{job_id}/metrics")["points"]
    before, after = before_after(points)
    print_table(console, before, after, f"{spec['name']}: {spec['objective']['name']} on SmolLM2-135M-Instruct",
                failures)  # fmt: skip
    png = plot_metrics(points, out_dir / f"{spec['name']}.png", title=spec["name"])
    console.print(f"training curves: {png}  (job {time.monotonic() - t0:.0f}s; "
                  f"`python -m distil.timeline {job_id}` shows where the time went)")  # fmt: skip
    summary = {"job": job_id, "spec": spec, "before": before, "after": after, "png": str(png),
               "eval_failures": failures, "job_s": time.monotonic() - t0, "machine": detect().describe()}  # fmt: skip
    (out_dir / f"{spec['name']}.json").write_text(json.dumps(summary, indent=2))
    missing = missing_sides(before, after, failures)
    if missing:
        raise RuntimeError(f"job {job_id}: no before/after comparison: {'; '.join(missing)}")
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
    ap.add_argument("--skip-doctor", action="store_true", help="no machine summary and micro-benchmark first")
    args = ap.parse_args()
    console = Console()
    expected_first = None
    if not args.skip_doctor:
        from distil.doctor import micro_benchmark, print_report

        console.print("[bold]this machine[/] (distil doctor; a ~20 s micro-benchmark of the demo model):")
        bench = micro_benchmark()
        print_report(console, bench)
        expected_first = bench.expected_first()
    out_dir = data_dir() / "demo"
    train, held = write_splits(out_dir / "tasks", seed=0)
    console.print(f"tasks: {train} and held-out {held} (generated, see docs/demo.md)")
    stack = Stack(args.port, console)
    try:
        stack.wait_ready()
        from distil.gateway.client import GatewayClient

        client = GatewayClient(f"http://127.0.0.1:{args.port}", timeout_s=60)
        cancel_leftovers(client, console)
        watch = StallWatch(time.monotonic(), first_s=first_budget(expected_first))
        run_job(client, demo_spec(train, held, steps=args.steps, seed=args.seed, objective=args.objective),
                console, out_dir, watch)  # fmt: skip
    finally:
        stack.close()


if __name__ == "__main__":
    main()
