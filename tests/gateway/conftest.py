"""A real stack for gateway tests: local Ray, Serve on a free port (in the mode `distil up`
uses), the session's Redis, and the gateway deployed as a Serve application with its own data
directory and token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.engine.conftest import smollm2_dir, vllm_tiny_dir  # noqa: F401  (shared session fixtures)
from tests.teacher.vllm_server import free_port

TOKEN = "gateway-test-token"


@dataclass
class Stack:
    url: str
    data_dir: Path
    redis_url: str

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def deploy_gateway(self) -> None:
        from ray import serve

        from distil.gateway.deployment import build_app

        serve.run(build_app({"bus": {"url": self.redis_url}}), name="gateway", route_prefix="/")

    def stop_gateway(self) -> None:
        from ray import serve

        serve.delete("gateway")

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while True:
                job = c.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in states:
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"waited {timeout_s}s for job {job_id} to reach {states}; it is {json.dumps(job)[:2000]}"
                    )
                time.sleep(0.5)


@pytest.fixture(scope="module")
def gateway_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gateway-data")


@pytest.fixture(scope="module")
def ray_options(gateway_data: Path) -> dict:
    """Ray for the gateway's stack: the data directory and token for every worker, and Serve
    in the mode `distil up` runs it in."""
    from distil.gateway.stack import serve_env

    env = {"OMP_NUM_THREADS": "1", "DISTIL_DATA_DIR": str(gateway_data), "DISTIL_API_TOKEN": TOKEN}
    return {"num_cpus": 8, "env_vars": env | serve_env(throughput_optimized=True)}


@pytest.fixture(scope="module")
def stack(ray_local, gateway_data: Path, redis_server) -> Iterator[Stack]:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    s = Stack(url=f"http://127.0.0.1:{port}", data_dir=gateway_data, redis_url=redis_server.url)
    s.deploy_gateway()
    yield s
    serve.shutdown()
