"""The Ray Serve deployment answers the same HTTP API (one replica, local Ray)."""

from __future__ import annotations

import socket

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_serve_deployment_executes_and_grades(ray_local):
    from ray import serve

    from services.feedback.deployment import build_app

    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"sandbox": {"slots": 2, "uid_base": 63800}}), name="feedback", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert client.get("/health").json()["status"] == "ok"
            result = client.post("/v1/execute", json={"program": "print(6 * 7)"}).json()
            assert result["status"] == "ok" and result["stdout"] == "42\n"
            task = {
                "id": "t",
                "prompt": "p",
                "public_tests": [{"kind": "stdio", "input": "", "output": "42"}],
            }
            graded = client.post(
                "/v1/grade", json={"task": task, "responses": ["```python\nprint(42)\n```"]}
            ).json()
            assert graded["responses"][0]["success"] is True
    finally:
        serve.shutdown()
