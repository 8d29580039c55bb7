"""The feedback stage of a job (a detached Ray actor) survives a SIGKILL: Ray restarts it, the
driver's health check calls it recovering rather than gone, and the restarted actor grades
what it had been given and what comes next (real Ray, Redis and sandbox)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pytest

from distil.bus import Bus, BusConfig, Group, Response
from distil.data import Task

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TASK = Task(
    id="double", prompt="Read n, print 2n.", public_tests=[{"kind": "stdio", "input": "2\n", "output": "4\n"}]
)
GOOD = "```python\nprint(2 * int(input()))\n```"
BUS = {"claim_idle_s": 2.0, "claim_interval_s": 0.5, "block_s": 0.5}


@pytest.fixture(scope="module")
def ray_options() -> dict:
    """Plain Ray for ``ray_local`` (tests/conftest.py): no Serve here, so not the gateway stack's."""
    return {"num_cpus": 2, "env_vars": {}}


def rollout(job: str, gid: str) -> Group:
    response = Response(token_ids=np.arange(4, dtype=np.int32), logprobs=np.zeros(4, np.float32), text=GOOD)
    return Group(job_id=job, group_id=gid, task_id=TASK.id, metadata={"task": TASK.model_dump_json()},
                 responses=[response])  # fmt: skip


def graded(bus: Bus, job: str, gid: str, timeout_s: float) -> Group:
    """Wait for group ``gid`` on the job's feedback stream (read by a test consumer)."""
    consumer = bus.consumer(job, "feedback", group="teacher", name="test")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in consumer.read(count=8, block_s=0.5):
            consumer.ack([d])
            if d.group.group_id == gid:
                return d.group
    raise AssertionError(f"waited {timeout_s:.0f}s for group {gid} on the feedback stream of {job}")


def pid_of(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def test_killed_feedback_actor_is_restarted_and_keeps_grading(ray_local, redis_server):
    import ray

    from distil.gateway.stages import ServeStages, feedback_actor_name

    job = f"fb-restart-{uuid.uuid4().hex[:8]}"
    config = {"url": redis_server.url, **BUS}
    stages = ServeStages(config)
    stages.start_feedback(job, {})
    actor = ray.get_actor(feedback_actor_name(job))
    bus = Bus(BusConfig.model_validate(config))
    try:
        assert stages.feedback_health(job, timeout_s=120) == {"alive": True, "error": ""}
        first = pid_of(actor)
        bus.producer(job, "rollouts").publish(rollout(job, "before"))
        assert graded(bus, job, "before", 60).responses[0].feedback.success

        os.kill(first, signal.SIGKILL)
        bus.producer(job, "rollouts").publish(rollout(job, "during"))  # while it is down
        seen = []
        deadline = time.monotonic() + 120
        while not (seen and seen[-1].get("alive")):
            assert time.monotonic() < deadline, f"the feedback actor did not come back: {seen}"
            seen.append(stages.feedback_health(job, timeout_s=5))
            time.sleep(0.2)
        # Never reported as gone for good: alive, or restarting (which the driver waits out).
        assert all(h.get("alive") or h.get("restarting") for h in seen), seen
        assert pid_of(actor) != first
        assert graded(bus, job, "during", 60).responses[0].feedback.success
        bus.producer(job, "rollouts").publish(rollout(job, "after"))
        assert graded(bus, job, "after", 60).responses[0].feedback.success
    finally:
        ray.get(actor.shutdown.remote(), timeout=60)
        ray.kill(actor, no_restart=True)
        bus.delete_job(job)
        bus.close()
