"""Where a job's wall-clock time goes: stage spans, their union, and what overlaps what.

Each stage stamps a ``StageSpan`` on every group it handles (``timed``); the learner adds
its own spans (waiting for data, forward/backward, optimizer, weight push). From those,
``breakdown`` computes per stage the busy time (union of its spans) and, over the whole
window, the time *no* stage was computing: the orchestration overhead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from distil.bus import Group, StageSpan

Interval = tuple[float, float]
COMPUTE_STAGES = ("rollout", "feedback", "teacher", "learner", "weight_push")


@contextmanager
def timed(group: Group, stage: str) -> Iterator[None]:
    """Append ``stage``'s wall-clock span to ``group`` when the block succeeds."""
    start = time.time()
    yield
    group.spans.append(StageSpan(stage, start, time.time()))


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Disjoint, sorted intervals covering exactly the input intervals."""
    out: list[list[float]] = []
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(intervals: Iterable[Interval]) -> float:
    return sum(b - a for a, b in union(intervals))


def intersect(xs: Iterable[Interval], ys: Iterable[Interval]) -> list[Interval]:
    xs, ys = union(xs), union(ys)
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if b > a:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def clip(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    return [
        (max(a, window[0]), min(b, window[1])) for a, b in intervals if min(b, window[1]) > max(a, window[0])
    ]


def breakdown(spans: Mapping[str, Iterable[Interval]], window: Interval) -> dict[str, float]:
    """Per-stage busy seconds and fractions of ``window``, plus:

    - ``overhead_frac``: share of the window in which no compute stage was busy;
    - ``rollout_overlaps_learner_s``: seconds the rollout generated while the learner trained;
    - ``serial_s`` / ``overlap_speedup``: the sum of the stages' busy times (what a run
      that never overlapped stages would take) and its ratio to the window.
    """
    wall = window[1] - window[0]
    if wall <= 0:
        raise ValueError(f"empty time window {window}")
    clipped = {k: union(clip(v, window)) for k, v in spans.items()}
    out: dict[str, float] = {"wall_s": wall}
    for stage in COMPUTE_STAGES:
        busy = length(clipped.get(stage, []))
        out[f"{stage}_s"] = busy
        out[f"{stage}_frac"] = busy / wall
    busy_any = length(iv for k in COMPUTE_STAGES for iv in clipped.get(k, []))
    out["any_busy_s"] = busy_any
    out["overhead_frac"] = 1.0 - busy_any / wall
    out["rollout_overlaps_learner_s"] = length(
        intersect(clipped.get("rollout", []), clipped.get("learner", []))
    )
    out["serial_s"] = sum(out[f"{s}_s"] for s in COMPUTE_STAGES)
    out["overlap_speedup"] = out["serial_s"] / wall
    return out


def load(path: Path) -> list[dict]:
    """The learner's per-step records (``data/jobs/<job>/timeline.jsonl``)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{path} has no steps yet")
    return records


def steady_state(records: list[dict]) -> tuple[dict[str, list[Interval]], Interval]:
    """All spans, and the window from the end of the first step's training (engines warm,
    the pipeline full) to the end of the last step."""
    spans: dict[str, list[Interval]] = {}
    for r in records:
        for stage, ivs in r["spans"].items():
            spans.setdefault(stage, []).extend((a, b) for a, b in ivs)
    first = records[0]["spans"]["learner"][0][1]
    last = max(b for r in records for ivs in r["spans"].values() for _, b in ivs)
    return spans, (first, last)


def busiest(records: list[dict]) -> tuple[str, float] | None:
    """The compute stage with the most busy time per recorded step, and those seconds (over
    every span so far, the first step's included: what a stall message names)."""
    spans, _ = steady_state(records) if records else ({}, (0.0, 0.0))
    per_step = {s: length(spans.get(s, [])) / len(records) for s in COMPUTE_STAGES if spans.get(s)}
    if not per_step:
        return None
    stage = max(per_step, key=per_step.__getitem__)
    return stage, per_step[stage]


def job_timeline(job_id: str) -> Path:
    from distil.paths import data_dir

    return data_dir() / "jobs" / job_id / "timeline.jsonl"


def slowest_note(path: Path) -> str:
    """A clause for a stall or timeout message: the busiest stage so far, from ``path``."""
    try:
        found = busiest(load(path)) if path.is_file() else None
    except (ValueError, KeyError, IndexError):  # a timeline being written or from an odd job
        found = None
    if found is None:
        return "no step has trained yet"
    return f"slowest stage so far: {found[0]} at {found[1]:.1f} busy s/step"


def main(argv: list[str] | None = None) -> None:
    """``python -m distil.timeline JOB_ID|PATH``: the step-time breakdown of a job."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("job", help="a job id (reads <data_dir>/jobs/<id>/timeline.jsonl) or a timeline file")
    args = ap.parse_args(argv)
    path = Path(args.job) if Path(args.job).is_file() else job_timeline(args.job)
    if not path.is_file():
        raise SystemExit(f"no timeline at {path}: is the job id right, and has it trained a step?")
    records = load(path)
    spans, window = steady_state(records)
    b = breakdown(spans, window)
    steps = max(len(records) - 1, 1)
    table = Table(title=f"where the time goes: steps 2-{len(records)} of {path.parent.name}")
    for col in ("stage", "busy s/step", "share of wall time"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage in COMPUTE_STAGES:
        table.add_row(stage, f"{b[f'{stage}_s'] / steps:.1f}", f"{b[f'{stage}_frac']:.0%}")
    table.add_row("no stage computing (overhead)", f"{(b['wall_s'] - b['any_busy_s']) / steps:.1f}",
                  f"{b['overhead_frac']:.1%}")  # fmt: skip
    table.add_row("wall", f"{b['wall_s'] / steps:.1f}", "100%")
    Console().print(table)
    print(f"rollout overlapped training for {b['rollout_overlaps_learner_s'] / steps:.1f} s/step; "
          f"stages run one after another would take {b['serial_s'] / steps:.1f} s/step "
          f"({b['overlap_speedup']:.2f}x the measured wall time)")  # fmt: skip


if __name__ == "__main__":
    main()
