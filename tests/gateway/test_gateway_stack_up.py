"""`distil up` for real, in a thread of this process (embedded Redis, local Ray, Serve, the
gateway): the API answers, Serve's proxy and the gateway replica run in the mode `up` chose
(throughput-optimized by default, with the router on its own loop, without gRPC handles and
direct ingress), and stopping it takes everything down. The CLI maps `--no-throughput-optimized` onto `up`."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from typer.testing import CliRunner

from distil.cli import app as cli
from distil.gateway import stack
from tests.teacher.vllm_server import free_port


def _serve_mode(actor) -> dict:
    """Serve's settings as the process of ``actor`` read them at import (via ``__ray_call__``)."""
    from ray.serve._private import constants as c

    return {
        "throughput_optimized": c.RAY_SERVE_THROUGHPUT_OPTIMIZED,
        "user_code_in_thread": c.RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD,
        "router_in_own_loop": c.RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP,
        "grpc_handles": c.RAY_SERVE_USE_GRPC_BY_DEFAULT,
        "direct_ingress": c.RAY_SERVE_ENABLE_DIRECT_INGRESS,
    }


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_up_serves_the_api_in_throughput_optimized_mode(tmp_path, monkeypatch):
    import ray

    assert not ray.is_initialized(), "`distil up` starts its own Ray; another module left one running"
    monkeypatch.setenv("DISTIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DISTIL_API_TOKEN", "up-token")
    monkeypatch.delenv("REDIS_URL", raising=False)
    for name in stack.serve_env(True):  # `up` sets them in this process; put them back afterwards
        monkeypatch.delenv(name, raising=False)
    port, ready, stop, errors, lines = free_port(), threading.Event(), threading.Event(), [], []

    def run() -> None:
        try:
            stack.up("127.0.0.1", port, num_cpus=2, num_gpus=0, ready=ready, stop=stop, log=lines.append)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="distil-up", daemon=True)
    thread.start()
    try:
        assert ready.wait(300), f"`distil up` was not ready within 300 s; it printed {lines}"
        assert not errors, errors
        base = f"http://127.0.0.1:{port}"
        assert json.loads((tmp_path / "stack.json").read_text())["url"] == base
        assert httpx.get(f"{base}/health", timeout=30).json() == {"status": "ok"}
        assert httpx.get(f"{base}/v1/jobs", timeout=30).status_code == 401
        auth = {"Authorization": "Bearer up-token"}
        assert httpx.get(f"{base}/v1/jobs", headers=auth, timeout=30).json()["jobs"] == []
        assert any("RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in line for line in lines), lines

        modes = {}
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith(("SERVE_REPLICA::gateway#", "SERVE_PROXY_ACTOR")):
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                modes[actor["name"].split("#")[0]] = ray.get(
                    handle.__ray_call__.remote(_serve_mode), timeout=60
                )
        assert "SERVE_REPLICA::gateway" in modes and any(n.startswith("SERVE_PROXY") for n in modes), modes
        want = {"throughput_optimized": True, "user_code_in_thread": False, "router_in_own_loop": True,
                "grpc_handles": False, "direct_ingress": False}  # fmt: skip
        assert all(mode == want for mode in modes.values()), modes
    finally:
        stop.set()
        thread.join(timeout=180)
    assert not thread.is_alive(), "`distil up` did not stop within 180 s"
    assert not errors, errors
    assert not (tmp_path / "stack.json").exists() and not ray.is_initialized()


def test_cli_up_passes_the_serve_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(stack, "up", lambda *args, **kwargs: calls.append(kwargs))
    runner = CliRunner()
    assert runner.invoke(cli, ["up", "--port", "1"]).exit_code == 0
    assert runner.invoke(cli, ["up", "--no-throughput-optimized"]).exit_code == 0
    assert runner.invoke(cli, ["up", "--throughput-optimized"]).exit_code == 0
    assert [c.get("throughput_optimized") for c in calls] == [None, False, True]  # None: up's default
    assert stack.serve_env(False) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
