"""The reviewing feedback stage on a real bus with real grading: a group waiting for a
reviewer does not hold up the others, a review sends it on with the reviewer's words, and
a restarted worker (new stage, new connection) finishes what the old one parked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from distil.bus import Bus, Group, Response
from distil.data import Task
from services.feedback.config import FeedbackConfig
from services.feedback.grading import Grader
from services.feedback.review_stage import ReviewingStage, make_stage
from services.feedback.sources import EnvironmentSourceConfig, SiblingSourceConfig
from services.feedback.sources.human import HumanSourceConfig, Review
from services.feedback.stage import FeedbackStage, task_lookup
from tests.conftest import fast_bus_config

TASK = Task(
    id="double",
    prompt="Read n, print 2n.",
    public_tests=[{"kind": "stdio", "input": "2\n", "output": "4\n"}],
)
GOOD = "```python\nprint(2 * int(input()))\n```"
BAD = "```python\nprint(int(input()))\n```"


def group(job: str, gid: str, *texts: str) -> Group:
    responses = [
        Response(token_ids=np.arange(4, dtype=np.int32), logprobs=np.zeros(4, np.float32), text=t)
        for t in texts
    ]
    return Group(job_id=job, group_id=gid, task_id=TASK.id, prompt_text=TASK.prompt, responses=responses)


def grader(sandbox, **human) -> Grader:
    sources = [EnvironmentSourceConfig(), SiblingSourceConfig(), HumanSourceConfig(**human)]
    return Grader(FeedbackConfig(sources=sources), sandbox=sandbox)


@contextmanager
def running(stage: FeedbackStage, bus: Bus, job: str) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=stage.run, args=(bus, job), kwargs={"stop": stop, "consumers": 1})
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the stage did not stop within 30s"


def wait_feedback(bus: Bus, job: str, n: int, timeout_s: float = 30.0) -> list[Group]:
    teacher = bus.consumer(job, "feedback", group="teacher")
    got: list[Group] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {n} feedback groups, got {len(got)}"
        batch = teacher.read(count=10, block_s=0.2)
        teacher.ack(batch)
        got += [d.group for d in batch]
    return got


def wait_items(stage: ReviewingStage, n: int, timeout_s: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while stage.queue is None or len(items := stage.queue.pending()) < n:
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {n} review items"
        time.sleep(0.05)
    return items


def test_make_stage_picks_the_reviewing_stage_only_with_a_human_source(sandbox):
    assert type(make_stage(Grader(FeedbackConfig(), sandbox=sandbox))) is FeedbackStage
    assert isinstance(make_stage(grader(sandbox)), ReviewingStage)


def test_waiting_group_does_not_block_others_and_review_reaches_feedback(bus, job_id, sandbox):
    stage = make_stage(grader(sandbox, deadline_s=120), task_lookup({TASK.id: TASK}))
    bus.producer(job_id, "rollouts").publish_many(
        [group(job_id, "needs-review", GOOD, BAD), group(job_id, "all-good", GOOD, GOOD)]
    )
    with running(stage, bus, job_id):
        (passed,) = wait_feedback(bus, job_id, 1)  # not selected: goes straight on
        assert passed.group_id == "all-good"
        (item,) = wait_items(stage, 1)
        assert item["group_id"] == "needs-review" and item["index"] == 1
        shown = stage.queue.item(item["item"])
        assert shown["response"] == BAD and shown["success"] is False
        assert shown["solution"].startswith("```python\nprint(2 *")  # the sibling, shown to the reviewer
        assert bus.backlog(job_id, "rollouts") == 0  # the parked group's rollout entry is acknowledged
        stage.queue.submit(
            item["item"], Review(verdict="reject", feedback="Double the number before printing.")
        )
        (reviewed,) = wait_feedback(bus, job_id, 1, timeout_s=10)
    fb = reviewed.responses[1].feedback
    assert reviewed.group_id == "needs-review"
    assert fb.feedback_text.endswith("Double the number before printing.")
    assert "Wrong answer" in fb.feedback_text  # the environment's text stays in front
    assert fb.solution_text == ""  # the reviewer's words replace the sibling demonstration
    assert reviewed.responses[0].feedback.success  # the other response is as graded
    assert stage.parked == 1 and stage.released == 1


def test_a_restarted_worker_finishes_what_the_old_one_parked(bus_config, job_id, sandbox):
    lookup = task_lookup({TASK.id: TASK})
    with Bus(bus_config) as bus:
        old = make_stage(grader(sandbox, selection="all", deadline_s=120), lookup)
        bus.producer(job_id, "rollouts").publish(group(job_id, "g1", BAD))
        with running(old, bus, job_id):
            (item,) = wait_items(old, 1)
    # The worker is gone; a reviewer answers meanwhile (the gateway writes to Redis directly).
    with Bus(fast_bus_config(bus_config.url)) as bus:
        new = make_stage(grader(sandbox, selection="all", deadline_s=120), lookup)
        new.bind(bus, job_id)
        new.queue.submit(item["item"], Review(verdict="reject", feedback="Print twice the input."))
        assert bus.backlog(job_id, "feedback") == 0
        with running(new, bus, job_id):
            (released,) = wait_feedback(bus, job_id, 1)
        assert released.responses[0].feedback.feedback_text.endswith("Print twice the input.")
        assert new.queue.stats()["groups_released"] == 1


def test_a_group_graded_twice_after_a_crash_is_parked_and_sent_once(bus, job_id, sandbox):
    """A worker that dies after parking but before the bus acknowledges the rollout entry
    gets the entry redelivered: the second grading finds the group parked already."""
    stage = make_stage(grader(sandbox, selection="all", deadline_s=0.5), task_lookup({TASK.id: TASK}))
    stage.bind(bus, job_id)
    assert stage.handle(group(job_id, "g1", BAD)) is None
    assert stage.handle(group(job_id, "g1", BAD)) is None  # the redelivered copy
    assert stage.parked == 1 and stage.queue.stats()["items_parked"] == 1
    time.sleep(0.6)
    assert stage.release_due() == 1 and stage.release_due() == 0
    (sent,) = wait_feedback(bus, job_id, 1)
    assert sent.responses[0].feedback.feedback_text.startswith("Wrong answer")  # expired: as graded
    stats = stage.queue.stats()
    assert stats["items_expired"] == 1 and stats["groups_expired"] == 1
