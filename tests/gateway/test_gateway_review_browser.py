"""Human review end to end in a real headless Chromium (Debian's, driven by Playwright):
real Redis, the gateway's API and review page over real HTTP, and the job's feedback stage
as the Ray actor the gateway runs (real grading in the sandbox).

1. a reviewer signs in on the page, opens a pending item, rejects it with feedback
   (keyboard shortcuts) and submits;
2. that feedback reaches the teacher: the group comes off the ``feedback`` stream (read as
   the teacher's consumer group) and the teacher's own context builder puts the
   reviewer's words into the context it scores the response under;
3. a browser without the token (or with a wrong one) sees the sign-in form and no data,
   and the data routes answer 401;
4. an item nobody reviews expires: its group goes on without human feedback, and that is
   counted in the feedback stage's health and the queue's counters.

``DISTIL_REVIEW_SCREENSHOT=docs/review-page.png`` also saves the page's screenshot there
(that is how the one in docs/ was made).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from distil.bus import Bus, Group, Response
from distil.data import Task
from distil.gateway.app import create_app
from distil.jobs import JobStore
from tests.conftest import fast_bus_config
from tests.feedback.conftest import serve_http
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401  (session fixtures)

pytestmark = pytest.mark.slow

TOKEN = "review-browser-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEADLINE_S = 30.0  # long enough to review one item in the browser, short enough to wait out the other
DOUBLE = Task(
    id="double",
    prompt="Read an integer n from stdin and print 2*n.",
    public_tests=[
        {"kind": "stdio", "input": "2\n", "output": "4\n"},
        {"kind": "stdio", "input": "5\n", "output": "10\n"},
    ],
)
TRIPLE = Task(
    id="triple",
    prompt="Read an integer n from stdin and print 3*n.",
    public_tests=[{"kind": "stdio", "input": "2\n", "output": "6\n"}],
)
GOOD = "Here is my solution:\n```python\nn = int(input())\nprint(2 * n)\n```"
BAD = "Read the number and print it:\n```python\n# read n\nn = int(input())\nprint(n)  # TODO\n```"
HUMAN = "You print n itself; the task asks for twice n. Multiply by 2 before printing."


def rollout(tokenizer, job: str, gid: str, task: Task, *texts: str) -> Group:
    responses = [
        Response(
            token_ids=np.array(tokenizer.encode(t, add_special_tokens=False), dtype=np.int32),
            logprobs=np.zeros(len(tokenizer.encode(t, add_special_tokens=False)), np.float32),
            text=t,
        )
        for t in texts
    ]
    return Group(
        job_id=job,
        group_id=gid,
        prompt_text=task.prompt,
        task_id=task.id,
        metadata={"task": task.model_dump_json()},
        responses=responses,
    )


def read_feedback(bus: Bus, job: str, gid: str, timeout_s: float, seen: dict[str, Group]) -> Group:
    """The group as the teacher stage receives it (consumer group ``teacher`` on ``feedback``);
    groups read meanwhile are kept in ``seen``."""
    teacher = bus.consumer(job, "feedback", group="teacher", name="browser-test")
    deadline = time.monotonic() + timeout_s
    while gid not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f}s for group {gid} on the feedback stream of {job}")
        for d in teacher.read(count=10, block_s=0.5):
            teacher.ack([d])
            seen[d.group.group_id] = d.group
    return seen[gid]


@pytest.fixture(scope="module")
def ray_options() -> dict:
    """Plain Ray for ``ray_local`` (tests/conftest.py): no Serve here, so not the gateway stack's."""
    return {"num_cpus": 4, "env_vars": {"OMP_NUM_THREADS": "1"}}


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make install` installs Debian's chromium (apt-get)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_reviewer_feedback_reaches_the_teacher_and_expired_items_go_on(
    ray_local,
    browser,
    redis_server,
    job_id,
    tmp_path,
    tiny_model_dir,  # noqa: F811
):
    import ray
    from playwright.sync_api import expect
    from transformers import AutoTokenizer

    from distil.gateway.feedback_worker import FeedbackJobWorker
    from services.teacher.config import SelfEMATeacherConfig
    from services.teacher.context import teacher_context
    from services.teacher.stage import score_items

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bus_config = fast_bus_config(redis_server.url)
    bus = Bus(bus_config)
    store = JobStore(tmp_path / "jobs.sqlite3")
    sources = [
        {"kind": "environment"},
        {"kind": "sibling"},
        {"kind": "human", "selection": "failures", "deadline_s": DEADLINE_S},
    ]
    seen: dict[str, Group] = {}
    job = store.create({"steps": 1, "feedback": {"sources": sources}}, name=job_id).id
    worker = FeedbackJobWorker.remote({"sources": sources}, job, bus_config.model_dump(mode="json"), 1)
    try:
        assert ray.get(worker.health.remote(), timeout=120)["alive"]
        with serve_http(create_app(store, TOKEN, bus=bus)) as url:
            page_url = f"{url}/review/{job}"

            # -- 1. a reviewer signs in; nothing waits yet
            reviewer = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = reviewer.new_page()
            page.goto(page_url)
            page.fill("#token", TOKEN)
            page.click("#login-form button[type=submit]")
            expect(page.locator("#app")).to_be_visible(timeout=10_000)
            expect(page.locator("#queue-empty")).to_be_visible()
            assert not page.is_visible("#login")

            # Two groups come out of the rollout stage: each has one failure, so one item each.
            bus.producer(job, "rollouts").publish_many(
                [
                    rollout(tokenizer, job, "g-double", DOUBLE, GOOD, BAD),
                    rollout(tokenizer, job, "g-triple", TRIPLE, BAD),
                ]
            )
            expect(page.locator("#items li")).to_have_count(2, timeout=60_000)
            expect(page.locator("#stats")).to_contain_text("2 pending")

            page.click("#items li:has-text('double')")
            expect(page.locator("#title")).to_have_text("double")
            assert "print 2*n" in page.text_content("#prompt")
            response = page.locator("#response")
            assert "print(n)" in response.text_content()
            assert response.locator("span.tok-bi", has_text="print").count() >= 1  # highlighted code
            assert response.locator("span.tok-com").first.text_content() == "# read n"
            assert page.locator("#tests .badge.failed").count() == 2
            assert "Wrong answer" in page.text_content("#existing")  # the environment's feedback
            assert "print(2 * n)" in page.text_content("#existing")  # the sibling's solution

            # Keyboard: r = reject (focuses the feedback box), type, Ctrl+Enter = submit.
            page.locator("body").press("r")
            assert page.is_checked("#reject")
            page.keyboard.type(HUMAN)
            shot = tmp_path / "review-page.png"
            page.evaluate("window.scrollTo(0, 0)")  # the queue column is sticky: shoot from the top
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("DISTIL_REVIEW_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["DISTIL_REVIEW_SCREENSHOT"])
            page.keyboard.press("Control+Enter")
            expect(page.locator("#status")).to_contain_text("goes on to the teacher", timeout=10_000)
            assert page.locator("#items li").count() == 1  # the triple item is left

            # -- 2. the reviewer's words reach the teacher's context for that response
            scored = read_feedback(bus, job, "g-double", 30, seen)
            fb = scored.responses[1].feedback
            assert fb.feedback_text.endswith(HUMAN) and "Wrong answer" in fb.feedback_text
            assert json.loads(scored.metadata["human_review"]) == {"verdicts": {"1": "reject"}, "expired": []}
            items = score_items(scored)
            ctx = teacher_context(tokenizer, items[1], SelfEMATeacherConfig())
            assert ctx is not None, "the reviewed response got no teacher context"
            prompt = tokenizer.decode(ctx.input_ids[: ctx.response_start])
            assert HUMAN in prompt and DOUBLE.prompt in prompt
            assert ctx.input_ids[ctx.response_start :] == [int(t) for t in scored.responses[1].token_ids]
            good_ctx = teacher_context(tokenizer, items[0], SelfEMATeacherConfig())
            assert good_ctx is None or HUMAN not in tokenizer.decode(good_ctx.input_ids)

            # -- 3. without the token: the sign-in form, no data, 401 from the data routes
            stranger = browser.new_context()
            spage = stranger.new_page()
            spage.goto(page_url)
            assert spage.is_visible("#login") and not spage.is_visible("#app")
            assert spage.locator("#items li").count() == 0
            status = spage.evaluate(f"fetch('/v1/jobs/{job}/reviews').then(r => r.status)")
            assert status == 401
            spage.fill("#token", "not-the-token")
            spage.click("#login-form button[type=submit]")
            expect(spage.locator("#login-error")).to_contain_text("refused")
            assert not spage.is_visible("#app") and spage.locator("#items li").count() == 0
            assert spage.evaluate("sessionStorage.length") == 0  # a refused token is not kept
            api = spage.goto(f"{url}/v1/jobs/{job}/reviews")
            assert api.status == 401 and "triple" not in spage.content()
            stranger.close()

            # -- 4. nobody reviews the triple item: at its deadline the group goes on without it
            expired = read_feedback(bus, job, "g-triple", DEADLINE_S + 30, seen)
            fb = expired.responses[0].feedback
            assert fb.feedback_text.startswith("Wrong answer") and HUMAN not in fb.feedback_text
            assert json.loads(expired.metadata["human_review"]) == {"verdicts": {}, "expired": [0]}
            health = ray.get(worker.health.remote(), timeout=30)
            assert health["reviews"]["items_expired"] == 1 and health["reviews"]["groups_expired"] == 1
            assert health["reviews"]["items_reviewed"] == 1 and health["reviews"]["groups_released"] == 2
            listed = httpx.get(f"{url}/v1/jobs/{job}/reviews", headers={"Authorization": f"Bearer {TOKEN}"})
            assert listed.json()["items"] == [] and listed.json()["stats"]["groups_expired"] == 1
            expect(page.locator("#items li")).to_have_count(0, timeout=15_000)
            expect(page.locator("#stats")).to_contain_text("1 expired")
            reviewer.close()
    finally:
        ray.get(worker.shutdown.remote(), timeout=60)
        ray.kill(worker)
        bus.delete_job(job)
        bus.close()
        store.close()
