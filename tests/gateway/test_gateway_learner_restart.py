"""A learner replica killed mid-job (issue #8 item 5, issue #7): Serve replaces the replica,
but the learner job lived in the dead one. The driver finds that the new replica has no such
job, starts it again from the job's last checkpoint (event ``learner_restarted``), and the
job completes on the real stack (gateway driver, vLLM CPU engines for rollout and teacher,
the feedback actor, the learner on the tiny model, Redis streams):

* every step is recorded once (the steps the dead learner trained after its checkpoint are
  retrained and recorded again under the same numbers, not added);
* the groups the dead learner held unacknowledged (trained after its last checkpoint, or
  being collected) are in the final weights' lineage, where each group is exactly once;
* every group the driver issued is trained, dropped as stale (counted), or still on a
  stream at the end, never more of them than the in-flight bound.
"""

from __future__ import annotations

import time

import pytest

from tests.gateway.test_gateway_faults import (  # noqa: F401  (fault_stack: the fixture)
    fault_stack,
    final_lineage,
    finished_job,
    issued_groups,
    leftover_groups,
    replica,
    sigkill,
    wait_for,
)
from tests.gateway.test_gateway_stack_jobs import submit, tiny_job, write_tasks

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

STEPS, GROUPS_PER_STEP, CHECKPOINT_EVERY = 6, 2, 2
BOUND = 2 * GROUPS_PER_STEP  # in flight: (max_staleness + 1) x groups_per_step


def test_job_survives_a_killed_learner_replica(fault_stack, vllm_tiny_dir, tmp_path):  # noqa: F811
    from distil.bus import Bus, BusConfig
    from distil.bus.envelope import peek_id
    from distil.gateway.stages import app_names

    stack = fault_stack
    t0 = time.monotonic()
    spec = tiny_job(vllm_tiny_dir, write_tasks(tmp_path / "tasks.jsonl", 8), steps=STEPS)
    spec["learner"]["groups_per_step"] = GROUPS_PER_STEP
    spec["checkpoint"] = {"every_steps": CHECKPOINT_EVERY, "keep_last": 10}
    spec["evaluation"]["at_end"] = False
    job_id = submit(stack, spec)
    apps = app_names(job_id)
    job_dir = stack.data_dir / "jobs" / job_id
    bus = Bus(BusConfig(url=stack.redis_url))
    scored = bus.stream(job_id, "scored")
    try:

        def odd_step():  # step k trained, k not checkpointed: its groups are unacknowledged
            with stack.client() as c:
                job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["state"] not in ("failed", "cancelled", "completed"), job
            return job["step"] if job["step"] >= 3 and job["step"] % CHECKPOINT_EVERY else None

        at = wait_for(f"job {job_id} to reach step 3 or 5", odd_step, 900, poll_s=0.2)
        killed = time.time()
        sigkill(replica(apps["learner"])["Pid"], f"the learner replica at step {at}")
        print(f"[learner-restart] killed after {time.monotonic() - t0:.0f}s", flush=True)
        # What the dead learner held: delivered to it, never acknowledged (nobody claims them
        # before claim_idle_s).
        held = bus.redis.xpending_range(scored, "learner", min="-", max="+", count=1000)
        rows = [bus.redis.xrange(scored, min=p["message_id"], max=p["message_id"]) for p in held]
        unacked = [peek_id(fields) for row in rows for _, fields in row]
        assert unacked, "the dead learner held no unacknowledged groups: nothing to check retraining with"
    finally:
        bus.close()

    _, cursor, history = finished_job(stack, job_id, STEPS, "learner-restart", timeout_s=900)
    print(f"[learner-restart] job completed after {time.monotonic() - t0:.0f}s", flush=True)

    # Restarted once, from the last checkpoint written before the kill.
    restarts = [data for kind, data in history if kind == "learner_restarted"]
    before = [
        int(d.name.removeprefix("step-"))
        for d in (job_dir / "checkpoints").glob("step-*")
        if (d / "DONE").is_file() and (d / "DONE").stat().st_mtime < killed
    ]
    assert restarts == [{"from_step": max(before)}], (restarts, before)

    # The final weights' lineage (every step once, each group once) holds what the dead
    # learner held unacknowledged (retrained, or covered by its checkpoint).
    _, trained = final_lineage(stack, job_id, STEPS, GROUPS_PER_STEP)
    assert set(unacked) <= set(trained), f"held by the dead learner, never retrained: {unacked}"

    # Every group issued is accounted for once, and the in-flight bound held.
    left = leftover_groups(stack, job_id, apps)
    issued = issued_groups(cursor)
    # dropped as stale, per learner run (each run's counter is in its last step's metrics)
    runs: list[float] = [0.0]
    for kind, data in history:
        if kind == "learner_restarted":
            runs.append(0.0)
        elif kind == "step":
            runs[-1] = data["metrics"].get("dropped_stale", 0.0)
    print(
        f"[learner-restart] issued {len(issued)}, trained {len(trained)}, left on streams {len(left)}, "
        f"dropped stale per learner run {runs}, unacknowledged at the kill {len(unacked)}",
        flush=True,
    )
    assert set(trained) <= set(issued), set(trained) - set(issued)
    assert not set(trained) & set(left), set(trained) & set(left)
    assert len(set(left)) == len(left) <= BOUND, left
    assert len(set(issued) - set(trained) - set(left)) == int(sum(runs)), (issued, trained, left, runs)
