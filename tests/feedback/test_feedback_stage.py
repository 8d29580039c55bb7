"""The feedback stage on a real bus (the session's Redis server): rollout groups in,
feedback groups out; unknown tasks are retried and dead-lettered, never lost."""

from __future__ import annotations

import threading

import numpy as np

from distil.bus import Group, Response
from distil.data import Task
from services.feedback.config import FeedbackConfig
from services.feedback.grading import Grader
from services.feedback.stage import FeedbackStage, task_lookup

TASK = Task(
    id="double",
    prompt="Read n, print 2n.",
    public_tests=[
        {"kind": "stdio", "input": "2\n", "output": "4\n"},
        {"kind": "stdio", "input": "5\n", "output": "10\n"},
    ],
)


def response(text: str, *, truncated: bool = False) -> Response:
    return Response(
        token_ids=np.arange(4, dtype=np.int32),
        logprobs=np.zeros(4, np.float32),
        text=text,
        truncated=truncated,
        finish_reason="length" if truncated else "stop",
    )


def test_stage_turns_rollouts_into_feedback(bus, job_id, sandbox):
    grader = Grader(FeedbackConfig(), sandbox=sandbox)
    stage = FeedbackStage(grader, task_lookup({TASK.id: TASK}))
    good = "```python\nprint(2 * int(input()))\n```"
    group = Group(
        job_id=job_id,
        group_id="g1",
        task_id=TASK.id,
        responses=[
            response(good),
            response("```python\nprint(1)\n```"),
            response("```python\nprint(", truncated=True),
        ],
    )
    inline = Group(
        job_id=job_id,
        group_id="g2",
        task_id="not-in-the-table",
        metadata={"task": TASK.model_dump_json()},
        responses=[response(good)],
    )
    bus.producer(job_id, "rollouts").publish_many([group, inline])
    done = stage.run(bus, job_id, stop=threading.Event(), consumers=1, max_messages=2)
    assert done == 2
    teacher = bus.consumer(job_id, "feedback", group="teacher")
    out = {d.group.group_id: d.group for d in teacher.read(count=10, block_s=5)}
    assert set(out) == {"g1", "g2"}
    fb = [r.feedback for r in out["g1"].responses]
    assert [f.reward for f in fb] == [1.0, 0.0, 0.0]
    assert [t.status for t in fb[1].tests] == ["failed", "failed"]
    assert fb[1].feedback_text.startswith("Wrong answer.") and fb[1].solution_text.startswith("```python")
    assert "cut off" in fb[2].feedback_text
    assert fb[0].feedback_text == "" and out["g2"].responses[0].feedback.success
    grader.pool.shutdown()


def test_unknown_task_is_dead_lettered_not_lost(bus, job_id, sandbox):
    grader = Grader(FeedbackConfig(), sandbox=sandbox)
    stage = FeedbackStage(grader, task_lookup({}))
    bus.producer(job_id, "rollouts").publish(
        Group(job_id=job_id, group_id="lost", task_id="nope", responses=[response("x")])
    )
    stop = threading.Event()
    thread = threading.Thread(target=stage.run, args=(bus, job_id), kwargs={"stop": stop, "consumers": 1})
    thread.start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if bus.dead_letters(job_id, "rollouts"):
                break
            deadline.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    letters = bus.dead_letters(job_id, "rollouts")
    assert letters and "unknown" in letters[0].reason
    grader.pool.shutdown()
