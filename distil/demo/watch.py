"""How long the demo waits for a job, from what this machine has shown so far.

A fixed deadline is wrong on every machine but one: an hour is far too long where the demo
takes ten minutes, and too short where a CPU emulates bf16. ``StallWatch`` instead allows,
before anything has happened, a budget from ``distil doctor``'s estimate for this machine,
and then a multiple of the longest wait for progress seen so far (a training step, an
evaluation). ``stall_message`` says what was awaited, which stage is slowest and on what CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distil.hardware import Hardware, detect

FACTOR = 4.0  # a wait may be this many times the longest one so far before it is a stall
FLOOR_S = 300.0  # and never shorter than this (a checkpoint, an evaluation after a fast step)
FIRST_S = 1800.0  # before any progress, without an estimate for this machine


def first_budget(expected_first_s: float | None) -> float:
    """Seconds allowed until the first progress (stages up, evaluation before training,
    first step): ``FACTOR`` x the estimate for this machine, or ``FIRST_S`` without one."""
    return FIRST_S if expected_first_s is None else max(FLOOR_S, FACTOR * expected_first_s)


@dataclass
class StallWatch:
    start: float
    first_s: float = FIRST_S
    factor: float = FACTOR
    floor_s: float = FLOOR_S
    longest: float = 0.0  # the longest wait between two progress marks so far

    def __post_init__(self) -> None:
        self.last = self.start

    def progress(self, now: float) -> None:
        """Something moved (a step trained, an evaluation ended or failed)."""
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def limit(self) -> float:
        return self.first_s if self.longest == 0 else max(self.floor_s, self.factor * self.longest)

    def stalled(self, now: float) -> bool:
        return now - self.last > self.limit()


def awaited(state: str, step: int, steps: int, evals: int) -> str:
    """What the job is doing while the demo waits, in words."""
    if state in ("queued", "starting"):
        return "the stages to start (engines, learner, feedback)"
    if step == 0:
        return "the evaluation before training and the first step" if evals == 0 else "the first step"
    if step < steps:
        return f"step {step + 1} of {steps}"
    return "the evaluation after training"


def stall_message(job_id: str, what: str, waited_s: float, watch: StallWatch, timeline: Path,
                  hw: Hardware | None = None) -> str:  # fmt: skip
    from distil import timeline as tl

    basis = (f"{watch.factor:.0f}x the longest wait so far ({watch.longest:.0f}s)" if watch.longest
             else "the estimate for this machine (distil doctor)")  # fmt: skip
    slow = tl.slowest_note(timeline)
    return (
        f"job {job_id}: waited {waited_s:.0f}s for {what}, past the limit of {watch.limit():.0f}s "
        f"({basis}); {slow}; this machine: {(hw or detect()).describe()}. "
        f"`python -m distil.timeline {job_id}` shows where the time went; `distil doctor` what to expect here."
    )
