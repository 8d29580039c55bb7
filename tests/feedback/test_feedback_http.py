"""The feedback service over real HTTP (uvicorn on a local port)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from distil.data import load_humaneval
from services.feedback.app import create_app
from services.feedback.config import FeedbackConfig
from services.feedback.sandbox import SandboxConfig

from .conftest import serve_http


@pytest.fixture(scope="module")
def service():
    app = create_app(FeedbackConfig(sandbox=SandboxConfig(slots=4, uid_base=63700, timeout_s=5)))
    with serve_http(app) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    app.state.feedback.close()


def test_health_reports_isolation(service):
    body = service.get("/health").json()
    assert body["status"] == "ok"
    assert body["isolation"]["level"] in ("namespaces", "process")


def test_execute(service):
    r = service.post("/v1/execute", json={"program": "print(input()[::-1])", "stdin": "abc\n"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["stdout"] == "cba\n" and body["isolation"]
    slow = service.post("/v1/execute", json={"program": "while True: pass", "timeout_s": 0.5}).json()
    assert slow["status"] == "timeout"


def test_execute_concurrently(service):
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: service.post("/v1/execute", json={"program": f"print({i})"}).json(), range(16))
        )
    assert [r["stdout"] for r in results] == [f"{i}\n" for i in range(16)]


def test_grade_a_group(service):
    task = load_humaneval()[0]
    good = "```python\n" + task.reference_solution + "\n```"
    bad = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    r = service.post(
        "/v1/grade",
        json={
            "task": task.model_dump(),
            "responses": [bad, good],
            "sources": [{"kind": "environment"}, {"kind": "sibling"}],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["reward"] for x in body["responses"]] == [0.0, 1.0]
    assert body["responses"][0]["feedback"].startswith("Wrong answer.")
    assert body["responses"][0]["solution"] == good.strip()
    assert body["responses"][1]["tests"][0]["status"] == "AC"
    metrics = service.get("/metrics").text
    assert 'distil_feedback_events_total{event="grade_successes"}' in metrics


def test_bad_requests_are_rejected_with_field_paths(service):
    r = service.post("/v1/grade", json={"task": {"id": "x", "prompt": "p"}, "responses": ["a"]})
    assert r.status_code == 422 and "public_tests" in r.text
    r = service.post("/v1/execute", json={"program": "pass", "timeout_s": -1})
    assert r.status_code == 422 and "timeout_s" in r.text
    r = service.post(
        "/v1/grade",
        json={
            "task": {"id": "x", "prompt": "p", "verifier": "mcq", "answer": "A"},
            "responses": ["A"],
            "truncated": [True, False],
        },
    )
    assert r.status_code == 422


def test_callback_for_unknown_request_is_counted_late(service):
    r = service.post("/v1/feedback/callback/nope", json={"feedback": "late"})
    assert r.json() == {"accepted": False}
    assert "distil_feedback_late_callbacks_total 1" in service.get("/metrics").text
