"""Faults during a real job (issue #8, item 5): one job through the whole stack (gateway
driver, rollout and teacher Serve replicas with vLLM CPU engines, the feedback actor, the
learner with two FSDP2 training workers, Redis streams), and at chosen steps a SIGKILL of
the rollout replica, the teacher replica, a learner training worker and the feedback
actor. The job must still complete, the learner must resume from its last checkpoint, and
every group must be trained exactly once:

* the final model's lineage (the group ids of every step that led to the final weights,
  saved with each checkpoint in ``Progress.trained_groups``) holds each group once and
  exactly ``steps x groups_per_step`` of them; a step lost with a dead worker and retrained
  from the checkpoint replaces the lost one, it does not add to it;
* every group the driver issued is accounted for exactly once: in the lineage, or still on a
  stream when the job ended (never trained); none was dropped as stale (a replacement engine
  waits for the job's weights) or dead-lettered.

Each killed stage is replaced and does work that gets trained (its spans in the job's
timeline start after the kill); the workers go back to the last checkpoint written before
the kill; the killed replicas' vLLM engine processes do not outlive them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.gateway.test_gateway_stack_jobs import submit, tiny_job, write_tasks

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

STEPS, GROUPS_PER_STEP, CHECKPOINT_EVERY = 7, 2, 2
# Recovery settings for the test: a dead consumer's entries are claimed after 8 s (the
# default 60 s would only make the test slower; handling a group takes well under 8 s).
FAULT_BUS = {"claim_idle_s": 8.0, "claim_interval_s": 1.0}
STREAMS = ("prompts", "rollouts", "feedback", "scored")


@pytest.fixture(scope="module")
def fault_stack(stack):
    from ray import serve

    from distil.gateway.deployment import build_app

    serve.run(build_app({"bus": {"url": stack.redis_url, **FAULT_BUS}}), name="gateway", route_prefix="/")
    return stack


# ---------------------------------------------------------------------- processes


def alive_actors() -> list[dict]:
    from ray._private.state import actors

    return [a for a in actors().values() if a["State"] == "ALIVE"]


def replica(app: str) -> dict:
    """The one live Serve replica of application ``app``."""
    found = [a for a in alive_actors() if a["Name"].startswith(f"SERVE_REPLICA::{app}#")]
    assert len(found) == 1, f"expected one live replica of {app}, found {[a['Name'] for a in found]}"
    return found[0]


def train_workers(learner_app: str) -> list[dict]:
    """The learner's training worker actors (owned by its Serve replica)."""
    owner = replica(learner_app)["Address"]["Port"]
    return [
        a
        for a in alive_actors()
        if a["ActorClassName"] == "TrainWorker" and a["OwnerAddress"]["Port"] == owner
    ]


def sigkill(pid: int, what: str) -> list[int]:
    """SIGKILL ``pid``; returns the pids of its children at that moment (e.g. a vLLM engine core)."""
    proc = psutil.Process(pid)
    children = [c.pid for c in proc.children(recursive=True)]
    print(f"[faults] SIGKILL {what} (pid {pid}, children {children})", flush=True)
    os.kill(pid, signal.SIGKILL)
    return children


def wait_for(what: str, check, timeout_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f}s for {what}")
        time.sleep(poll_s)


def wait_step(stack, job_id: str, step: int, timeout_s: float) -> dict:
    def reached():
        with stack.client() as c:
            job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("failed", "cancelled"):
            raise AssertionError(f"job {job_id} ended {job['state']} before step {step}: {job['reason']}")
        return job if job["step"] >= step else None

    return wait_for(f"job {job_id} to reach step {step}", reached, timeout_s)


# ---------------------------------------------------------------------- the audit


def finished_job(stack, job_id: str, steps: int, tag: str, timeout_s: float):
    """Wait for the job to end; assert it completed all ``steps``; ``(job, cursor, history)``
    with its events (the non-step ones printed under ``tag``)."""
    from distil.jobs import Cursor, JobStore

    job = stack.wait_state(job_id, ("completed", "failed", "cancelled"), timeout_s=timeout_s)
    store = JobStore(stack.data_dir / "jobs.sqlite3")
    try:
        cursor = Cursor.from_dict(store.get(job_id).cursor)
        history = [(e["kind"], e["data"]) for e in store.events(job_id, limit=1000)]
    finally:
        store.close()
    print(f"[{tag}] job {job['state']}", flush=True)
    for kind, data in history:
        if kind not in ("step", "checkpoint"):
            print(f"[{tag}]   event {kind}: {json.dumps(data)[:300]}", flush=True)
    assert job["state"] == "completed", job["reason"]
    assert job["step"] == steps
    return job, cursor, history


def final_lineage(stack, job_id: str, steps: int, groups_per_step: int):
    """Every step recorded once, the last checkpoint the last step's, and the final weights'
    lineage holding ``steps x groups_per_step`` groups, each once: ``(points, trained)``."""
    with stack.client() as c:
        points = c.get(f"/v1/jobs/{job_id}/metrics?kind=train").json()["points"]
        checkpoints = c.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert [p["step"] for p in points] == list(range(1, steps + 1))
    assert checkpoints[-1]["step"] == steps
    progress = json.loads((Path(checkpoints[-1]["path"]) / "progress.json").read_text())
    lineage = progress["trained_groups"]
    assert len(lineage) == steps and all(len(step) == groups_per_step for step in lineage), lineage
    trained = [g for step in lineage for g in step]
    assert len(set(trained)) == len(trained), f"a group was trained twice: {lineage}"
    return points, trained


def issued_groups(cursor, n_train: int = 6) -> list[str]:
    """The ids of the groups the driver issued (``n_train`` training tasks per epoch)."""
    return [f"e{i // n_train}-i{i % n_train}" for i in range(cursor.issued)]


def leftover_groups(stack, job_id: str, apps: dict[str, str]) -> list[str]:
    """With no group dead-lettered, the ids still on the job's streams once its stage
    applications are deleted (never trained), read in one consistent snapshot."""
    from distil.bus import Bus, BusConfig
    from distil.bus.envelope import peek_id

    bus = Bus(BusConfig(url=stack.redis_url))
    try:
        dead = {s: [d.message_id for d in bus.dead_letters(job_id, s)] for s in STREAMS}
        assert not any(dead.values()), f"dead-lettered groups: {dead}"
        wait_for(
            "the job's stage applications to be deleted",
            lambda: not set(apps.values()) & set(_serve_apps()),
            timeout_s=120,
        )
        with bus.redis.pipeline(transaction=True) as p:
            for s in STREAMS:
                p.xrange(bus.stream(job_id, s))
            snapshot = p.execute()
    finally:
        bus.close()
    left = [peek_id(fields) for rows in snapshot for _, fields in rows]
    assert len(set(left)) == len(left), left
    return left


# ---------------------------------------------------------------------- the test


def test_job_survives_killed_replicas_workers_and_feedback(fault_stack, vllm_tiny_dir, tmp_path):
    import ray

    from distil.gateway.stages import app_names, feedback_actor_name

    stack = fault_stack
    t0 = time.monotonic()
    tasks = write_tasks(tmp_path / "tasks.jsonl", 8)
    spec = tiny_job(vllm_tiny_dir, tasks, steps=STEPS)
    spec["learner"]["groups_per_step"] = GROUPS_PER_STEP
    spec["checkpoint"] = {"every_steps": CHECKPOINT_EVERY, "keep_last": 10}
    spec["placement"] = {"learner_gpus": 2}  # two training ranks (on CPU here): a worker to kill
    spec["evaluation"]["at_end"] = False
    spec["timeouts"] = {"stages_ready_s": 600, "first_step_s": 600, "step_s": 300, "eval_s": 300}
    job_id = submit(stack, spec)
    apps = app_names(job_id)
    job_dir = stack.data_dir / "jobs" / job_id
    killed: dict[str, float] = {}  # stage -> when it was killed (unix time)
    children: list[int] = []

    def at_step(step: int, timeout_s: float) -> None:
        wait_step(stack, job_id, step, timeout_s)
        print(f"[faults] step {step} after {time.monotonic() - t0:.0f}s", flush=True)

    # The in-flight bound is (max_staleness + 1) x groups_per_step = 4 groups, so after a kill
    # at step k at most 2k + 4 of the 2 x STEPS groups exist: the rest (STEPS > k + 2) pass
    # through the restarted stage.
    for step, stage in ((1, "rollout"), (2, "teacher")):
        at_step(step, 600)
        old = replica(apps[stage])["Pid"]
        killed[stage] = time.time()
        children += sigkill(old, f"the {stage} replica")
        wait_for(f"Serve to replace the {stage} replica", lambda s=stage, o=old: _replaced(apps[s], o), 300)

    at_step(3, 400)  # the last checkpoint is step 2's (or step 4's, if the learner is that quick)
    workers = train_workers(apps["learner"])
    assert len(workers) == 2, workers
    killed["learner"] = time.time()
    sigkill(workers[1]["Pid"], "learner training worker rank 1")

    at_step(4, 400)
    feedback = ray.get_actor(feedback_actor_name(job_id))
    old_feedback = _actor_pid(feedback)
    killed["feedback"] = time.time()
    sigkill(old_feedback, "the feedback actor")
    wait_for(
        "Ray to restart the feedback actor", lambda: _actor_pid(feedback) not in (None, old_feedback), 120
    )

    _, cursor, _ = finished_job(stack, job_id, STEPS, "faults", timeout_s=600)
    runtime = time.monotonic() - t0

    # Every killed stage's replacement did work the learner trained on: some trained group has
    # a span of that stage that started after the kill.
    steps = [json.loads(line) for line in (job_dir / "timeline.jsonl").read_text().splitlines()]
    for stage in ("rollout", "teacher", "feedback"):
        after = [st["step"] for st in steps for a, _ in st["spans"].get(stage, []) if a > killed[stage]]
        assert after, f"no trained group went through the {stage} stage after it was killed: {steps}"

    # Every group trained exactly once: the final weights' lineage.
    points, trained = final_lineage(stack, job_id, STEPS, GROUPS_PER_STEP)

    # The learner restarted its workers from the last checkpoint written before the kill.
    last = points[-1]
    assert last["worker_restarts"] >= 1, last
    restored = [(p["step"], p["restored_policy_version"]) for p in points if "restored_policy_version" in p]
    assert len(restored) == 1, restored
    written_before = [
        int(d.name.removeprefix("step-"))
        for d in (job_dir / "checkpoints").glob("step-*")
        if (d / "DONE").is_file() and (d / "DONE").stat().st_mtime < killed["learner"]
    ]
    print(f"[faults] workers restored version {restored[0][1]}; checkpoints before the kill {written_before}")
    assert restored[0][1] == max(written_before), (restored, written_before)

    # ... and every group the driver issued (8 tasks, eval_fraction 0.25: 6 per epoch) is
    # accounted for exactly once; what is left on the streams was never trained.
    issued = issued_groups(cursor)
    left = leftover_groups(stack, job_id, apps)
    assert set(trained) <= set(issued), set(trained) - set(issued)
    assert not set(trained) & set(left), set(trained) & set(left)
    unaccounted = set(issued) - set(trained) - set(left)
    print(
        f"[faults] issued {len(issued)}, trained {len(trained)}, left on streams {len(left)}, "
        f"dropped stale {int(last['dropped_stale'])}; job took {runtime:.0f}s",
        flush=True,
    )
    assert len(unaccounted) == int(last["dropped_stale"]), (unaccounted, last["dropped_stale"])
    # None was stale either: a replacement engine samples nothing before it has the job's weights.
    assert last["dropped_stale"] == 0

    # The killed replicas' engine processes did not outlive them: vLLM's engine core notices
    # its parent's death and exits, which takes a while on a loaded machine (a zombie that is
    # not reaped yet has exited).
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 120
    while (lingering := [pid for pid in children if running(pid)]) and time.monotonic() < deadline:
        time.sleep(1.0)
    for pid in lingering:
        os.kill(pid, signal.SIGKILL)
    assert not lingering, f"processes of killed replicas still running: {lingering}"


def _actor_pid(actor) -> int | None:
    """The actor's process id; None while it is dead or restarting."""
    import ray

    try:
        return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
    except Exception:
        return None


def _replaced(app: str, old_pid: int) -> bool:
    found = [a for a in alive_actors() if a["Name"].startswith(f"SERVE_REPLICA::{app}#")]
    return len(found) == 1 and found[0]["Pid"] != old_pid


def _serve_apps() -> list[str]:
    from ray import serve

    return list(serve.status().applications)
