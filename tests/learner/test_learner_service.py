"""The learner as a Ray Serve deployment: a job submitted over HTTP trains from the bus to
completion; status and Prometheus metrics report it; bad specs get 422."""

from __future__ import annotations

import time

import httpx
import pytest
from ray import serve

from services.learner.deployment import build_app
from tests.learner.test_learner_stage import scored_group


@pytest.mark.slow
def test_learner_deployment_runs_a_job(ray_local, bus, bus_config, job_id, tiny_model_dir, tmp_path):
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    try:
        serve.run(
            build_app({"bus": bus_config.model_dump(mode="json")}), name="learner", route_prefix="/learner"
        )
        base = "http://127.0.0.1:8765/learner"
        bus.producer(job_id, "scored").publish_many([scored_group(job_id, seed=s) for s in range(4)])
        spec = {
            "job_id": job_id,
            "model": str(tiny_model_dir),
            "steps": 2,
            "train": {"lr": 1e-3},
            "stage": {"groups_per_step": 2, "checkpoint_every": 1},
            "checkpoint_dir": str(tmp_path),
        }
        with httpx.Client(base_url=base, timeout=30) as http:
            bad = http.post("/v1/learner/jobs", json={**spec, "steps": 0, "objective": {"name": "ppo"}})
            assert bad.status_code == 422
            fields = {tuple(e["loc"]) for e in bad.json()["detail"]}
            assert ("body", "steps") in fields and ("body", "objective", "name") in fields
            assert http.post("/v1/learner/jobs", json=spec).status_code == 202
            deadline = time.monotonic() + 300
            while (status := http.get(f"/v1/learner/jobs/{job_id}").json())["state"] in (
                "starting",
                "running",
            ):
                assert time.monotonic() < deadline, f"learner job still {status['state']} after 300 s"
                time.sleep(1)
            assert status["state"] == "completed", status
            assert status["steps"] == 2 and status["policy_version"] == 2 and status["groups_trained"] == 4
            assert "loss" in status["metrics"]
            metrics = http.get("/metrics").text
            assert f'distil_learner_steps{{job="{job_id}"}} 2.0' in metrics
            assert http.get("/health").json()["jobs"][job_id] == "completed"
            assert http.get("/v1/learner/jobs/nope").status_code == 404
        assert (tmp_path / "step-00000002" / "model" / "model.safetensors").is_file()
    finally:
        serve.shutdown()
