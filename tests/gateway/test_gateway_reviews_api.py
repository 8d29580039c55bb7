"""The review API in process against the session's Redis: token on every data route,
clear errors (unknown job or item 404, already reviewed 409, expired 410, bad body 422),
and the page's files served with a strict Content-Security-Policy."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from distil.gateway.app import create_app
from distil.jobs import JobStore
from services.feedback.review_queue import ReviewQueue, group_key
from services.feedback.sources.human import HumanSourceConfig
from tests.feedback.test_review_queue import graded_group

TOKEN = "review-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path, bus):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create({"steps": 1}, name="reviews")
    with TestClient(create_app(store, TOKEN, bus=bus)) as c:
        c.job = job.id
        c.queue = ReviewQueue(bus, job.id)
        yield c
    bus.delete_job(job.id)
    store.close()


def test_review_routes_need_the_token(api):
    item = f"{group_key('g')}-0"
    for method, path in [
        ("get", f"/v1/jobs/{api.job}/reviews"),
        ("get", f"/v1/jobs/{api.job}/reviews/{item}"),
        ("post", f"/v1/jobs/{api.job}/reviews/{item}"),
    ]:
        assert getattr(api, method)(path).status_code == 401
        assert getattr(api, method)(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_list_get_submit_and_the_errors(api):
    api.queue.park(graded_group(api.job, "g1"), [0], HumanSourceConfig(deadline_s=60), "code")
    api.queue.park(graded_group(api.job, "g2"), [0], HumanSourceConfig(deadline_s=0.3), "code")
    first, short = f"{group_key('g1')}-0", f"{group_key('g2')}-0"
    base = f"/v1/jobs/{api.job}/reviews"

    listed = api.get(base, headers=AUTH).json()
    assert [i["item"] for i in listed["items"]] == [short, first]  # soonest deadline first
    assert listed["stats"]["pending_items"] == 2 and listed["stats"]["groups_parked"] == 2
    item = api.get(f"{base}/{first}", headers=AUTH).json()
    assert item["state"] == "pending" and item["prompt"] == "Read n, print 2n." and item["verifier"] == "code"

    assert api.get("/v1/jobs/nope/reviews", headers=AUTH).status_code == 404
    r = api.get(f"{base}/zzz", headers=AUTH)
    assert r.status_code == 404 and "ids look like" in r.json()["detail"]
    r = api.post(f"{base}/{group_key('other')}-0", headers=AUTH, json={"verdict": "accept"})
    assert r.status_code == 404
    for bad in (
        {},
        {"verdict": "maybe"},
        {"verdict": "accept", "extra": 1},
        {"verdict": "accept", "feedback": 3},
    ):
        r = api.post(f"{base}/{first}", headers=AUTH, json=bad)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"][0] == "body"

    ok = api.post(f"{base}/{first}", headers=AUTH, json={"verdict": "reject", "feedback": "Read n first."})
    assert ok.status_code == 200 and ok.json() == {
        "item": first,
        "state": "reviewed",
        "group_complete": True,
        "duplicate": False,
    }
    again = api.post(f"{base}/{first}", headers=AUTH, json={"verdict": "accept"})
    assert again.status_code == 409 and "already reviewed" in again.json()["detail"]
    assert api.get(f"{base}/{first}", headers=AUTH).json()["review"]["feedback"] == "Read n first."

    time.sleep(0.35)
    late = api.post(f"{base}/{short}", headers=AUTH, json={"verdict": "accept"})
    assert late.status_code == 410 and "expired" in late.json()["detail"]
    assert api.get(base, headers=AUTH).json()["items"] == []


def test_the_page_is_static_and_locked_down(api):
    page = api.get(f"/review/{api.job}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "/review/static/review.js" in page.text and api.job not in page.text  # no data in the page
    js = api.get("/review/static/review.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # model output is inserted as text only
    assert api.get("/review/static/..%2Fapp.py").status_code == 404  # only the page's own files
    assert "distil" not in api.get("/review/static/..%2Fapp.py").text
    assert api.get("/review/static/index.html").status_code == 404


def test_without_a_bus_the_review_api_says_so(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create({"steps": 1})
    with TestClient(create_app(store, TOKEN)) as c:
        r = c.get(f"/v1/jobs/{job.id}/reviews", headers=AUTH)
        assert r.status_code == 503 and "without a bus" in r.json()["detail"]
    store.close()


def test_job_specs_with_a_human_source_are_checked_at_submission(api):
    human = {"kind": "human", "selection": "fraction", "fraction": 0.2, "deadline_s": 300}
    ok = api.post("/v1/jobs", headers=AUTH, json={"feedback": {"sources": [{"kind": "environment"}, human]}})
    assert ok.status_code == 201, ok.text
    assert ok.json()["state"] == "queued"
    two = api.post("/v1/jobs", headers=AUTH, json={"feedback": {"sources": [human, human]}})
    assert two.status_code == 422 and two.json()["detail"][0]["loc"] == "feedback.sources.1"
    slow = api.post(
        "/v1/jobs",
        headers=AUTH,
        json={"feedback": {"sources": [human | {"deadline_s": 900}]}, "timeouts": {"step_s": 600}},
    )
    assert slow.status_code == 422
    assert slow.json()["detail"][0]["loc"] == "feedback.sources.0.deadline_s"
    assert "below timeouts.step_s" in slow.json()["detail"][0]["msg"]
    bad = api.post("/v1/jobs", headers=AUTH, json={"feedback": {"sources": [human | {"selection": "some"}]}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"].startswith("feedback.sources.0")
