"""The gateway on a real Ray + Serve + Redis stack: auth over HTTP, 422 with field paths,
and a job whose model path is wrong failing within seconds with the reason."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_missing_or_wrong_token_gets_401(stack):
    with stack.client(token=None) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/jobs").status_code == 401
        assert c.post("/v1/jobs", json={}).status_code == 401
    with stack.client(token="wrong") as c:
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/v1/jobs/x/events").status_code == 401
    with stack.client() as c:
        assert c.get("/v1/jobs").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_invalid_specs_get_422_with_field_paths(stack):
    with stack.client() as c:
        r = c.post("/v1/jobs", json={"rollout": {"n": -1}, "nonsense": True})
        assert r.status_code == 422
        assert {"rollout.n", "nonsense"} <= {e["loc"] for e in r.json()["detail"]}
        r = c.post(
            "/v1/jobs",
            content="objective: {name: sdpo}\nteacher: {kind: black_box, url: 'http://t', form: sampled_tokens}\n",
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "teacher.kind"


def test_wrong_model_path_fails_within_seconds(stack):
    with stack.client() as c:
        r = c.post("/v1/jobs", json={"model": "/no/such/model", "steps": 1})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    t0 = time.monotonic()
    job = stack.wait_state(job_id, ("failed",), timeout_s=20)
    assert time.monotonic() - t0 < 20
    assert job["reason"].startswith("model:") and "/no/such/model" in job["reason"]
