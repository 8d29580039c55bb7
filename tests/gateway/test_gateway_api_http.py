"""The REST API in process (job store on disk, no scheduler): auth, body limit, CORS,
validation with field paths, and the job lifecycle endpoints."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from distil.gateway.app import create_app
from distil.jobs import JobStore

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    with TestClient(create_app(store, TOKEN)) as c:
        c.store = store
        yield c
    store.close()


ROUTES = [
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/x"),
    ("post", "/v1/jobs/x/cancel"),
    ("post", "/v1/jobs/x/resume"),
    ("get", "/v1/jobs/x/metrics"),
    ("get", "/v1/jobs/x/checkpoints"),
    ("get", "/v1/jobs/x/samples"),
    ("get", "/v1/jobs/x/events"),
    ("get", "/metrics"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_but_health_needs_the_token(client, method, path):
    assert getattr(client, method)(path).status_code == 401
    assert getattr(client, method)(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert getattr(client, method)(path, headers={"Authorization": TOKEN}).status_code == 401
    assert client.get("/health").status_code == 200


def test_invalid_spec_gets_422_with_field_paths(client):
    r = client.post("/v1/jobs", headers=AUTH, json={"rollout": {"n": 0}, "training": {"lr": "fast"}})
    assert r.status_code == 422
    assert "rollout.n" in {e["loc"] for e in r.json()["detail"]}
    r = client.post(
        "/v1/jobs",
        headers=AUTH | {"Content-Type": "application/yaml"},
        content="objective: {name: opsd}\nteacher: {kind: black_box, url: 'http://t', form: sampled_tokens}\n",
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "teacher.kind"
    assert client.post("/v1/jobs", headers=AUTH, content="[1, 2]").status_code == 422
    assert client.post("/v1/jobs", headers=AUTH, content=b"\xff\xfe").status_code == 422


def test_body_limit_and_closed_cors(client):
    assert client.post("/v1/jobs", headers=AUTH, content=b"a" * (2 << 20)).status_code == 413
    r = client.options(
        "/v1/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_job_lifecycle_endpoints(client):
    r = client.post("/v1/jobs", headers=AUTH, content="name: smoke\nsteps: 2\n")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["steps"] == 2
    listed = client.get("/v1/jobs", headers=AUTH).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    detail = client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert detail["spec"]["rollout"]["n"] == 8  # defaults are frozen into the stored spec
    client.store.add_metrics(job["id"], 1, {"loss": 1.5})
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=AUTH).json()["points"][0]["loss"] == 1.5
    assert client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=AUTH).json()["checkpoints"] == []
    assert client.get(f"/v1/jobs/{job['id']}/samples", headers=AUTH).json()["samples"] == []
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH).json()["state"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH).status_code == 409
    assert client.post(f"/v1/jobs/{job['id']}/resume", headers=AUTH).json()["state"] == "queued"
    events = client.get(f"/v1/jobs/{job['id']}/events?follow=false", headers=AUTH)
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.text.count("event: state") == 3
    assert client.get("/v1/jobs/nope", headers=AUTH).status_code == 404
