"""The feedback stage of one job as a Ray actor.

The feedback service's Serve deployment has no per-job bus mode yet (its stage,
``services.feedback.stage.FeedbackStage``, is only reachable in-process), so the driver
runs that stage in a detached actor named ``distil-{job}-feedback``. It also grades
evaluation samples on the held-out split. With a ``human`` source the stage parks groups
in the job's review queue (``services.feedback.review_stage``); ``health`` then reports
the queue's counters (``reviews``), among them the items and groups that expired.
"""

from __future__ import annotations

import threading
from typing import Any

import ray


@ray.remote(num_cpus=0)
class FeedbackJobWorker:
    def __init__(self, config: dict[str, Any], job: str, bus: dict[str, Any], consumers: int = 2) -> None:
        from distil.bus import Bus, BusConfig
        from services.feedback.config import FeedbackConfig
        from services.feedback.grading import Grader
        from services.feedback.review_stage import make_stage

        self.grader = Grader(FeedbackConfig.model_validate(config))
        self.stage = make_stage(self.grader)
        self.bus = Bus(BusConfig.model_validate(bus))
        self.stop = threading.Event()
        self.error = ""
        self.committed = 0

        def run() -> None:
            try:
                self.committed = self.stage.run(self.bus, job, stop=self.stop, consumers=consumers)
            except Exception as exc:  # reported through health()
                self.error = f"{type(exc).__name__}: {exc}"

        self.thread = threading.Thread(target=run, name=f"feedback-{job}", daemon=True)
        self.thread.start()

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alive": self.thread.is_alive(), "error": self.error}
        queue = getattr(self.stage, "queue", None)
        if queue is not None:
            try:
                out["reviews"] = queue.stats()
            except Exception as exc:  # Redis away: the stage itself reports through error/alive
                out["reviews_error"] = f"{type(exc).__name__}: {exc}"
            if self.stage.release_error:
                out["reviews_error"] = self.stage.release_error
        return out

    def grade(
        self, task: dict[str, Any], responses: list[str], truncated: list[bool]
    ) -> list[dict[str, Any]]:
        """Grade evaluation samples on the private split (``grade_samples``)."""
        return grade_samples(self.grader, task, responses, truncated)

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.grader.close()
        self.bus.close()


def grade_samples(
    grader: Any, task: dict[str, Any], responses: list[str], truncated: list[bool]
) -> list[dict[str, Any]]:
    """Per evaluation sample, graded on the private split: reward, success, fraction of tests
    passed and ``answer_key`` (what maj@k votes on; None when no answer was found)."""
    from distil.data import Task

    result = grader.grade_group(
        Task.model_validate(task), responses, split="private", truncated=truncated, sources=[]
    )
    return [
        {"reward": r.reward, "success": r.success, "fraction": r.fraction_passed, "answer_key": r.answer_key}
        for r in result.responses
    ]
