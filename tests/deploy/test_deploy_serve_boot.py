"""The CPU placement file boots the real stack as the container does -- `distil serve
--config deploy/serve/cpu.yaml` in a subprocess, outside Docker -- against an external
Redis (the test session's, as REDIS_URL), and a tiny job runs end to end through the REST
API with the file's job defaults under its spec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.gateway.test_gateway_stack_jobs import tiny_job, write_tasks
from tests.teacher.vllm_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-boot-token"


def wait_for(what: str, check, timeout_s: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"`distil serve` exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}"
            )
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f}s for {what}; serve log:\n{log.read_text()[-4000:]}")
        time.sleep(1.0)


def test_cpu_config_boots_and_runs_a_tiny_job(tmp_path, redis_server, vllm_tiny_dir):
    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    env = os.environ | {
        "DISTIL_DATA_DIR": str(data),
        "DISTIL_API_TOKEN": TOKEN,
        "REDIS_URL": redis_server.url,
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        sys.executable,
        "-m",
        "distil.cli",
        "serve",
        "--config",
        str(ROOT / "deploy/serve/cpu.yaml"),
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:

        def healthy():
            try:
                return client.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the gateway's /health", healthy, 300, proc, log)
        text = log.read_text()
        assert f"redis   {redis_server.url}" in text and "(embedded)" not in text  # the external Redis
        # Serve runs in `distil up`'s mode (throughput-optimized, router on its own loop: the
        # job below calls deployment handles from plain threads, which the mode's own router
        # setting refuses).
        assert "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=1" in text, text[
            -2000:
        ]
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401

        spec = tiny_job(vllm_tiny_dir, write_tasks(tmp_path / "tasks.jsonl", 8), steps=2)
        del spec["engine"]["enforce_eager"], spec["engine"]["kv_cache_gib"]  # left to the file's defaults
        r = client.post("/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        stored = client.get(f"/v1/jobs/{job_id}").json()["spec"]
        assert (
            stored["engine"]["enforce_eager"] is True and stored["engine"]["kv_cache_gib"] == 1.0
        )  # cpu.yaml
        assert stored["engine"]["max_model_len"] == 256  # the job's own setting wins

        def ended():
            job = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["state"] in ("completed", "failed", "cancelled") else None

        job = wait_for(f"job {job_id} to end", ended, 900, proc, log)
        assert job["state"] == "completed", job["reason"]
        assert job["step"] == 2
        points = client.get(f"/v1/jobs/{job_id}/metrics", params={"kind": "train"}).json()["points"]
        assert [p["step"] for p in points] == [1, 2]
        assert client.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"][-1]["step"] == 2
        keys = redis.Redis.from_url(redis_server.url).keys(f"distil:{job_id}:*")
        assert keys, "the job's streams are not in the external Redis"
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise AssertionError(
                    f"`distil serve` did not stop within 120 s of SIGTERM:\n{log.read_text()[-4000:]}"
                ) from None
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert "stopping: serve, ray, redis" in log.read_text()
    assert not (data / "stack.json").exists()
