"""Whole jobs through the gateway on the real stack (Ray + Serve + Redis, vLLM CPU engines
for rollout and teacher, the learner on a tiny model): submit -> steps -> completed with
metrics, checkpoints, samples and an evaluation; cancel mid-run; restart the gateway
mid-run and the job goes on."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def write_tasks(path, n: int) -> str:
    with path.open("w") as f:
        for i in range(n):
            task = {
                "id": f"add-{i}",
                "prompt": f"Write a Python function add{i}(a, b) that returns a + b.",
                "verifier": "code",
                "public_tests": [{"kind": "call", "fn": f"add{i}", "args": [1, 2], "expected": 3}],
                "private_tests": [{"kind": "call", "fn": f"add{i}", "args": [2, 5], "expected": 7}],
            }
            f.write(json.dumps(task) + "\n")
    return str(path)


def tiny_job(model_dir, tasks: str, steps: int, **extra) -> dict:
    engine = {"enforce_eager": True, "kv_cache_gib": 0.5, "max_model_len": 256, "max_logprobs": 20}
    return {
        "model": str(model_dir),
        "dataset": {"kind": "jsonl", "path": tasks, "eval_fraction": 0.25},
        "steps": steps,
        "rollout": {"n": 2, "max_tokens": 8, "temperature": 1.0},
        "engine": engine,
        "learner": {"groups_per_step": 2, "max_staleness": 1, "wait_timeout_s": 300},
        "training": {"lr": 1e-4, "token_budget": 1024},
        "checkpoint": {"every_steps": 1, "keep_last": 2},
        "evaluation": {"every_steps": 0, "k": 2, "max_tokens": 8, "max_problems": 1},
        "timeouts": {"stages_ready_s": 600, "first_step_s": 600, "step_s": 300, "eval_s": 300},
        **extra,
    }


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks") / "tasks.jsonl", 8)


def submit(stack, spec: dict) -> str:
    with stack.client() as c:
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def test_submit_runs_steps_and_completes(stack, vllm_tiny_dir, tasks_file):
    spec = tiny_job(vllm_tiny_dir, tasks_file, steps=2)
    spec["evaluation"]["max_problems"] = 2  # evaluated concurrently
    job_id = submit(stack, spec)
    job = stack.wait_state(job_id, ("completed", "failed", "cancelled"), timeout_s=900)
    assert job["state"] == "completed", job["reason"]
    # every stage stamped its span on the trained groups: the learner's timeline has them per step
    timeline = [
        json.loads(x) for x in (stack.data_dir / "jobs" / job_id / "timeline.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in timeline] == [1, 2]
    assert all({"rollout", "feedback", "teacher", "learner"} <= set(r["spans"]) for r in timeline)
    with stack.client() as c:
        detail = c.get(f"/v1/jobs/{job_id}").json()
        assert detail["step"] == 2 and detail["policy_version"] >= 2
        points = c.get(f"/v1/jobs/{job_id}/metrics").json()["points"]
        train = [p for p in points if p["kind"] == "train"]
        assert [p["step"] for p in train] == [1, 2] and all("loss" in p and "reward_mean" in p for p in train)
        evals = [p for p in points if p["kind"] == "eval"]
        assert evals and "score/pass@1" in evals[-1] and evals[-1]["problems"] == 2.0
        assert [ck["step"] for ck in c.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]][-1] == 2
        events = c.get(f"/v1/jobs/{job_id}/events").text  # the job has ended: the stream closes
        assert "event: step" in events and "event: finished" in events
        eval_data = [json.loads(b.split("data: ", 1)[1]) for b in events.split("\n\n") if "event: eval" in b]
        assert eval_data and eval_data[-1]["k"] == 2 and len(eval_data[-1]["solved"]) == 2  # per problem
        assert all(0 <= v <= 2 for v in eval_data[-1]["solved"].values())
        metrics = c.get("/metrics").text
        assert f'distil_job_step{{job="{job_id}"}} 2.0' in metrics
        assert "distil_stream_backlog" in metrics


def test_cancel_mid_run(stack, vllm_tiny_dir, tasks_file):
    job_id = submit(stack, tiny_job(vllm_tiny_dir, tasks_file, steps=50))
    stack.wait_state(job_id, ("running",), timeout_s=600)
    with stack.client() as c:
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = stack.wait_state(job_id, ("cancelled", "failed", "completed"), timeout_s=120)
    assert job["state"] == "cancelled" and job["step"] < 50


def test_gateway_restart_mid_run_continues_the_job(stack, vllm_tiny_dir, tasks_file):
    job_id = submit(stack, tiny_job(vllm_tiny_dir, tasks_file, steps=4))
    stack.wait_state(job_id, ("running",), timeout_s=600)
    stack.stop_gateway()
    time.sleep(2)
    stack.deploy_gateway()
    with stack.client() as c:
        assert job_id in [j["id"] for j in c.get("/v1/jobs").json()["jobs"]]
    job = stack.wait_state(job_id, ("completed", "failed", "cancelled"), timeout_s=900)
    assert job["state"] == "completed", job["reason"]
    assert job["step"] == 4


def test_resume_after_cancel_continues_from_the_checkpoint(stack, vllm_tiny_dir, tasks_file):
    job_id = submit(stack, tiny_job(vllm_tiny_dir, tasks_file, steps=5))
    deadline = time.monotonic() + 600
    with stack.client() as c:
        while c.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"] == []:
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.5)
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = stack.wait_state(job_id, ("cancelled", "completed", "failed"), timeout_s=120)
    if job["state"] == "completed":
        pytest.skip("the job finished before the cancel arrived")
    assert job["state"] == "cancelled"
    with stack.client() as c:
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["state"] == "queued"
    job = stack.wait_state(job_id, ("completed", "failed", "cancelled"), timeout_s=900)
    assert job["state"] == "completed", job["reason"]
    with stack.client() as c:
        steps = [p["step"] for p in c.get(f"/v1/jobs/{job_id}/metrics?kind=train").json()["points"]]
    assert job["step"] == 5 and steps[-1] == 5 and sorted(set(steps)) == steps


def test_evaluation_every_n_steps(stack, vllm_tiny_dir, tasks_file):
    """evaluation.every_steps=2 over 4 steps: the held-out split is evaluated after step 2
    (the schedule) and after step 4 (the end), each with avg, pass@k, maj@k and best@k."""
    spec = tiny_job(vllm_tiny_dir, tasks_file, steps=4)
    spec["evaluation"] |= {"every_steps": 2, "at_end": True}
    job_id = submit(stack, spec)
    job = stack.wait_state(job_id, ("completed", "failed", "cancelled"), timeout_s=900)
    assert job["state"] == "completed", job["reason"]
    with stack.client() as c:
        evals = c.get(f"/v1/jobs/{job_id}/metrics?kind=eval").json()["points"]
        events = c.get(f"/v1/jobs/{job_id}/events").text
    assert [p["step"] for p in evals] == [2, 4], evals
    k = spec["evaluation"]["k"]
    expected = {"score/avg", "accuracy/avg"} | {
        f"{kind}/{metric}@{i}" for kind in ("score", "accuracy") for metric in ("best", "maj") for i in (1, k)
    }
    expected |= {f"score/pass@{i}" for i in (1, k)}
    for p in evals:
        assert expected <= set(p), f"eval at step {p['step']} lacks {expected - set(p)}"
        assert all(0.0 <= p[key] <= 1.0 for key in expected), p
        assert p["problems"] == 1.0
    assert "event: eval_failed" not in events
