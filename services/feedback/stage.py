"""The feedback stage on the bus: rollout groups in, feedback groups out.

Each group's task comes from ``group.metadata["task"]`` (a task as JSON, put there by
whoever enqueued the prompt) or from a task table by ``group.task_id``. Every response
gets a ``Feedback`` (reward, success, per-test results, feedback text, solution text);
the teacher decides what to do with them. A group whose task is unknown raises, so the
bus retries it and finally dead-letters it with the reason -- it is never lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from distil.bus import Bus, Feedback, Group, TestResult
from distil.data import Task
from distil.timeline import timed

from .grading import Grader
from .group import ResponseFeedback

BUS_STATUS = {
    "AC": "passed",
    "WA": "failed",
    "TLE": "timeout",
    "MLE": "error",
    "OLE": "error",
    "RE": "error",
    "CE": "error",
    "SANDBOX_ERROR": "error",
}

TaskLookup = Callable[[Group], Task]


def task_lookup(tasks: Mapping[str, Task] | None = None) -> TaskLookup:
    def lookup(group: Group) -> Task:
        if "task" in group.metadata:
            return Task.model_validate_json(group.metadata["task"])
        if tasks is not None and group.task_id in tasks:
            return tasks[group.task_id]
        raise KeyError(
            f"group {group.group_id}: task {group.task_id!r} is unknown and the group carries no metadata['task']"
        )

    return lookup


def to_bus_feedback(item: ResponseFeedback) -> Feedback:
    tests = [
        TestResult(
            name=f"test_{t.index}",
            status=BUS_STATUS[t.status],
            fraction=1.0 if t.status == "AC" else 0.0,
            message=t.status if t.status in ("AC", "WA", "TLE") else f"{t.status}: {t.error[:500]}",
        )
        for t in item.tests
    ]
    return Feedback(
        reward=item.reward,
        success=item.success,
        tests=tests,
        feedback_text=item.feedback or "",
        solution_text=item.solution or "",
    )


class FeedbackStage:
    def __init__(self, grader: Grader, lookup: TaskLookup | None = None) -> None:
        self.grader = grader
        self.lookup = lookup or task_lookup()

    def handle(self, group: Group) -> Group:
        task = self.lookup(group)
        texts = [r.text for r in group.responses]
        truncated = [r.truncated or r.finish_reason == "length" for r in group.responses]
        with timed(group, "feedback"):
            result = self.grader.grade_group(
                task, texts, truncated=truncated, job_id=group.job_id, group_id=group.group_id
            )
        for response, item in zip(group.responses, result.responses, strict=True):
            response.feedback = to_bus_feedback(item)
        return group

    def run(
        self,
        bus: Bus,
        job: str,
        *,
        stop: threading.Event,
        consumers: int = 2,
        max_messages: int | None = None,
    ) -> int:
        """Consume ``rollouts`` and produce ``feedback`` with ``consumers`` loops (threads)
        until ``stop`` is set; returns the number of groups committed."""
        counts: list[int] = []

        def loop(i: int) -> None:
            consumer = bus.consumer(job, "rollouts", group="feedback", output="feedback")
            counts.append(consumer.run(self.handle, stop=stop, max_messages=max_messages))

        threads = [
            threading.Thread(target=loop, args=(i,), name=f"feedback-consumer-{i}") for i in range(consumers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)
