"""DistIL vs SDPO vs GRPO vs the local-CE ablation under one budget, on the demo's code
tasks, plus the regime where the base model never solves a problem (paper, Section 6.3).

    python bench/compare.py [--seeds 0 1 2] [--steps 12] [--objectives distil sdpo grpo ce]
                            [--regimes code zero secret] [--port 8100]
    python bench/compare.py --report    # table + plot from data/compare/results.json, runs nothing

One embedded stack (Redis, Ray, Serve, the gateway) runs every job in turn, through the
REST API, with the same model (SmolLM2-135M-Instruct), budget (steps x prompts x samples)
and evaluation for every objective:

- ``code``: train on the demo's training split with execution + successful-sibling
  feedback; evaluate on the held-out split (never seen in training).
- ``secret``: the never-solved regime made exact (``distil.demo.tasks.SECRET``): prompts
  that name a rule without saying what it does, so the base model's pass rate is 0 by
  construction; train and evaluate on those problems themselves (the paper's question: does
  the method make progress on problems it never solves?) with the reference solution as
  feedback. GRPO's reward is 0 on every sample there.
- ``zero``: first an evaluation of the base model on every task; then train and evaluate
  only on the tasks it solved 0 times in k samples, with the reference solution as
  feedback (the paper's hard-problem setting). GRPO sees reward 0 everywhere there.

Writes ``data/compare/results.json`` (every job's before/after metrics, per-task solves and
seed), ``data/compare/*.png`` and prints a markdown table (mean +- std over seeds) for
``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from distil.demo.run import Stack, cancel_leftovers, demo_spec, follow, write_splits
from distil.demo.tasks import make_split, secret_tasks
from distil.paths import data_dir

METRICS = ("score/pass@1", "score/pass@4", "accuracy/avg", "score/maj@4")
LABELS = {"distil": "DistIL", "sdpo": "SDPO", "grpo": "GRPO", "ce": "local CE", "opsd": "OPSD", "sft": "SFT"}
ZERO_FEEDBACK = {"sources": [{"kind": "environment"}, {"kind": "reference"}]}
REGIMES = ("code", "zero", "secret")


def eval_events(client, job_id: str) -> list[dict]:
    r = client.http.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"})
    r.raise_for_status()
    out = []
    for block in r.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "eval":
            out.append(json.loads(lines["data"]))
    return sorted(out, key=lambda e: e["step"])


def run(client, spec: dict, console: Console) -> dict:
    t0 = time.monotonic()
    job_id = client.request("POST", "/v1/jobs", json=spec)["id"]
    job = follow(client, job_id, spec["steps"], console)
    if job["state"] != "completed":
        raise RuntimeError(f"job {job_id} ({spec['name']}) {job['state']}: {job.get('reason')}")
    points = client.request("GET", f"/v1/jobs/{job_id}/metrics")["points"]
    return {"job": job_id, "name": spec["name"], "evals": eval_events(client, job_id),
            "train": [p for p in points if p["kind"] != "eval"], "wall_s": time.monotonic() - t0}  # fmt: skip


def write_tasks(path: Path, tasks: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    return path


def base_solves(client, console: Console, out: Path, steps_seed: int) -> dict[str, float]:
    """Per-task successes of the base model (k samples) on every task, train and held-out."""
    train, held = make_split(seed=0)
    everything = write_tasks(out / "tasks" / "all.jsonl", train + held)
    spec = demo_spec(everything, everything, steps=1, seed=steps_seed, name="compare-base")
    spec["evaluation"] |= {"at_end": False}
    result = run(client, spec, console)
    return result["evals"][0]["solved"]


def zero_split(solved: dict[str, float]) -> tuple[list, list]:
    """The demo's split restricted to tasks the base model never solved."""
    train, held = make_split(seed=0)
    keep = {t for t, c in solved.items() if c == 0}
    return [t for t in train if t.id in keep], [t for t in held if t.id in keep]


def summarize(jobs: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """(regime/objective) -> metric -> (mean change, std of change, seeds)."""
    table: dict[str, dict[str, list[float]]] = {}
    for j in jobs:
        before, after = j["before"], j["after"]
        row = table.setdefault(f"{j['regime']}/{j['objective']}", {})
        for m in METRICS:
            if m in before and m in after:
                row.setdefault(m, []).append(after[m] - before[m])
                row.setdefault(f"after:{m}", []).append(after[m])
                row.setdefault(f"before:{m}", []).append(before[m])
    return {
        k: {
            m: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for m, v in row.items()
        }
        for k, row in table.items()
    }


def markdown(summary: dict, objectives: list[str]) -> str:
    lines = []
    for regime in REGIMES:
        rows = [o for o in objectives if f"{regime}/{o}" in summary]
        if not rows:
            continue
        lines.append(f"\n**{regime}** (mean +- std over seeds; change = after - before)\n")
        head = "| objective | seeds | " + " | ".join(f"{m} before -> after (change)" for m in METRICS) + " |"
        lines += [head, "|---|---:|" + "---:|" * len(METRICS)]
        for o in rows:
            s = summary[f"{regime}/{o}"]
            cells = []
            for m in METRICS:
                if m not in s:
                    cells.append("")
                    continue
                (b, _, _), (a, _, _), (d, sd, _) = s[f"before:{m}"], s[f"after:{m}"], s[m]
                cells.append(f"{b:.3f} -> {a:.3f} ({d:+.3f} +- {sd:.3f})")
            lines.append(f"| {LABELS.get(o, o)} | {s[METRICS[0]][2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(jobs: list[dict], objectives: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    regimes = [r for r in REGIMES if any(j["regime"] == r for j in jobs)]
    fig, axes = plt.subplots(1, 1 + len(regimes), figsize=(5 * (1 + len(regimes)), 4))
    ax = axes[0]
    for o in objectives:
        curves = [
            {p["step"]: p["success_rate"] for p in j["train"] if "success_rate" in p}
            for j in jobs
            if j["objective"] == o and j["regime"] == "code"
        ]
        if not curves:
            continue
        xs = sorted(set.intersection(*(set(c) for c in curves)))
        ys = np.array([[c[x] for x in xs] for c in curves])
        line = ax.plot(xs, ys.mean(0), label=f"{LABELS.get(o, o)} ({len(curves)} seeds)")[0]
        ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    ax.set(title="code: training success rate (mean, min-max over seeds)", xlabel="step")
    ax.legend(fontsize=6)
    summary = summarize(jobs)
    for ax, regime in zip(axes[1:], regimes, strict=True):
        rows = [o for o in objectives if f"{regime}/{o}" in summary]
        xs = range(len(rows))
        ax.bar(xs, [summary[f"{regime}/{o}"]["score/pass@1"][0] for o in rows],
               yerr=[summary[f"{regime}/{o}"]["score/pass@1"][1] for o in rows], capsize=4)  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(list(xs), [LABELS.get(o, o) for o in rows])
        where = (
            "trained-problem" if regime == "secret" else "held-out"
        )  # secret: evaluated on its training problems
        ax.set(title=f"{regime}: {where} pass@1 change (mean +- std)")
    fig.tight_layout()
    path = out / "compare.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def import_job(state: dict, job_id: str, regime: str, objective: str, seed: int, steps: int) -> None:
    """Add a finished job (e.g. ``make demo``'s, which is the code regime's DistIL run) from the
    job store in the data directory, instead of running it again."""
    from distil.jobs import JobStore

    store = JobStore()  # <data_dir>/jobs.sqlite3, where the gateway keeps it
    evals = sorted((e["data"] for e in store.events(job_id, limit=100000) if e["kind"] == "eval"),
                   key=lambda e: e["step"])  # fmt: skip
    if len(evals) < 2:
        raise SystemExit(f"job {job_id} has {len(evals)} evaluations; need one before and one after training")
    state["base_evals"] = state.get("base_evals", {}) | {f"{regime}/s{seed}": evals[0]}
    state["jobs"].append({"regime": regime, "objective": objective, "seed": seed, "steps": steps, "job": job_id,
                          "wall_s": None, "before": evals[0]["metrics"], "after": evals[-1]["metrics"],
                          "solved_before": evals[0].get("solved"), "solved_after": evals[-1].get("solved"),
                          "train": store.metrics(job_id, kind="train")})  # fmt: skip


def report(state: dict, args: argparse.Namespace, console: Console, out: Path, results_path: Path) -> None:
    """Print the markdown table and redraw the plot for the jobs of this budget (--steps)."""
    jobs = [j for j in state["jobs"] if j["steps"] == args.steps]
    console.print(markdown(summarize(jobs), args.objectives))
    console.print(f"plot: {plot(jobs, args.objectives, out)}; results: {results_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--objectives", nargs="+", default=["distil", "sdpo", "grpo", "ce"])
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--report", action="store_true",
                    help="only print the table and redraw the plot from results.json; run nothing")  # fmt: skip
    ap.add_argument("--import-job", nargs=4, metavar=("JOB", "REGIME", "OBJECTIVE", "SEED"),
                    help="record a finished job from the job store instead of running it")  # fmt: skip
    args = ap.parse_args()
    console = Console()
    out = data_dir() / "compare"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    state: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {"jobs": []}
    if args.import_job:
        job, regime, objective, seed = args.import_job
        import_job(state, job, regime, objective, int(seed), args.steps)
        results_path.write_text(json.dumps(state, indent=1))
        console.print(f"imported {job} as {regime}/{objective}/s{seed}")
        return
    if args.report:
        report(state, args, console, out, results_path)
        return
    done = {(j["regime"], j["objective"], j["seed"], j["steps"]) for j in state["jobs"]}
    stack = Stack(args.port, console)
    try:
        stack.wait_ready()
        from distil.gateway.client import GatewayClient

        client = GatewayClient(f"http://127.0.0.1:{args.port}", timeout_s=60)
        cancel_leftovers(client, console)
        splits = {"code": write_splits(out / "tasks", seed=0)}
        if "zero" in args.regimes:
            if "base_solved" not in state:
                state["base_solved"] = base_solves(client, console, out, steps_seed=0)
                results_path.write_text(json.dumps(state, indent=1))
            z_train, z_held = zero_split(state["base_solved"])
            console.print(f"zero-pass subset: {len(z_train)} training and {len(z_held)} held-out tasks")
            if z_train and z_held:
                splits["zero"] = (write_tasks(out / "tasks" / "zero-train.jsonl", z_train),
                                  write_tasks(out / "tasks" / "zero-heldout.jsonl", z_held))  # fmt: skip
        if "secret" in args.regimes:
            secret = write_tasks(out / "tasks" / "secret.jsonl", secret_tasks())
            splits["secret"] = (secret, secret)  # trained and evaluated on the same problems
        for seed in args.seeds:
            for regime in [r for r in args.regimes if r in splits]:
                for objective in args.objectives:
                    if (regime, objective, seed, args.steps) in done:
                        continue
                    train, held = splits[regime]
                    spec = demo_spec(train, held, steps=args.steps, seed=seed, objective=objective,
                                     name=f"compare-{regime}-{objective}-s{seed}")  # fmt: skip
                    if regime in ("zero", "secret"):
                        spec["feedback"] = ZERO_FEEDBACK
                    # The base model's evaluation is the same for every objective at one seed
                    # (same weights, same seeded sampling): run it once per (regime, seed).
                    base_key = f"{regime}/s{seed}"
                    cached = state.setdefault("base_evals", {}).get(base_key)
                    spec["evaluation"]["at_start"] = cached is None
                    console.rule(spec["name"])
                    r = run(client, spec, console)
                    before, after = (cached or r["evals"][0]), r["evals"][-1]
                    state["base_evals"][base_key] = before
                    state["jobs"].append({"regime": regime, "objective": objective, "seed": seed,
                                          "steps": args.steps, "job": r["job"], "wall_s": r["wall_s"],
                                          "before": before["metrics"], "after": after["metrics"],
                                          "solved_before": before.get("solved"), "solved_after": after.get("solved"),
                                          "train": r["train"]})  # fmt: skip
                    results_path.write_text(json.dumps(state, indent=1))
                    console.print({m: (before["metrics"].get(m), after["metrics"].get(m)) for m in METRICS})
    finally:
        stack.close()
    report(state, args, console, out, results_path)


if __name__ == "__main__":
    sys.exit(main())
