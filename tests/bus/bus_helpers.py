"""Small builders shared by the bus tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from distil.bus import Feedback, Group, Response, TeacherScores, TestResult


def make_group(
    job: str, gid: str, *, g: int = 2, t: int = 16, k: int = 0, feedback: bool = False, seed: int = 0
) -> Group:
    rng = np.random.default_rng(seed)
    responses = []
    for i in range(g):
        r = Response(
            token_ids=rng.integers(0, 50_000, t, dtype=np.int32),
            logprobs=-rng.random(t, dtype=np.float32),
            finish_reason="length" if i % 2 else "stop",
            truncated=bool(i % 2),
            text=f"response {i} of {gid}",
        )
        if feedback:
            r.feedback = Feedback(
                reward=float(i),
                success=i == 0,
                tests=[
                    TestResult("test_a", "passed", 1.0),
                    TestResult("test_b", "failed", 0.25, "assert 1 == 2"),
                ],
                feedback_text="AssertionError in test_b",
                solution_text="def f(): return 1",
            )
        if k:
            r.teacher = TeacherScores(
                top_ids=rng.integers(0, 50_000, (t, k), dtype=np.int32),
                top_logprobs=-rng.random((t, k), dtype=np.float32),
            )
        responses.append(r)
    return Group(
        job_id=job,
        group_id=gid,
        prompt_text=f"prompt of {gid}",
        prompt_token_ids=np.arange(7, dtype=np.int32),
        responses=responses,
        policy_version=3,
        task_id=f"task-{gid}",
        metadata={"dataset": "unit"},
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def output_ids(bus, job: str, stream: str) -> list[str]:
    """Message ids of every entry currently in a job's stream, in order."""
    key = bus.stream(job, stream)
    return [f[b"id"].decode() for _, f in bus.redis.xrange(key)]
