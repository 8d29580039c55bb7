"""Rollout and teacher services as Ray Serve deployments fed by a real Redis bus, each with a
real vLLM CPU engine: prompts -> rollouts -> (feedback played by the test) -> scored; the
OpenAI-compatible policy endpoint; health and metrics; a verified weight update through a
deployment handle; an overlong prompt dead-lettered with its reason."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from distil.bus import Feedback, Group
from tests.engine.engine_helpers import hf_model, token_logprobs
from tests.teacher.vllm_server import free_port

pytestmark = pytest.mark.slow
G = 2


@pytest.fixture(scope="module")
def serve_url(ray_local):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def engine_cfg(model) -> dict:
    return {
        "model": str(model),
        "enforce_eager": True,
        "kv_cache_gib": 0.5,
        "max_model_len": 256,
        "max_logprobs": 20,
    }


def read_all(bus, job, stream, group, n, timeout_s, output=None):
    consumer = bus.consumer(job, stream, group=group, output=output)
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.read(count=n - len(got), block_s=0.5)
    assert len(got) == n, f"waited {timeout_s}s for {n} groups on {stream}, got {len(got)}"
    return consumer, got


def test_rollout_and_teacher_deployments_on_the_bus(
    serve_url, bus, bus_config, job_id, vllm_tiny_dir, vllm_tiny_alt_dir
):
    from ray import serve

    from services.rollout.deployment import build_app as rollout_app
    from services.teacher.deployment import build_app as teacher_app

    # Generation takes seconds here: entries idle for less must not be claimed by others.
    bus_args = bus_config.model_dump(mode="json") | {"claim_idle_s": 120.0}
    serve.run(
        rollout_app(
            {
                "config": {
                    "engine": engine_cfg(vllm_tiny_dir),
                    "sampling": {"n": G, "max_tokens": 8, "seed": 1},
                },
                "job": job_id,
                "bus": bus_args,
            }
        ),
        name="rollout",
        route_prefix="/rollout",
    )
    serve.run(
        teacher_app(
            {
                "teacher": {"kind": "self_ema", "top_k": 5, "engine": engine_cfg(vllm_tiny_dir)},
                "student_model": str(vllm_tiny_dir),
                "job": job_id,
                "bus": bus_args,
            }
        ),
        name="teacher",
        route_prefix="/teacher",
    )

    # prompts -> rollouts, many groups in flight; one prompt too long for the context.
    prompts = [Group(job_id=job_id, group_id=f"p{i}", prompt_text=f"Count to {i}.") for i in range(4)]
    prompts.append(
        Group(job_id=job_id, group_id="too-long", prompt_token_ids=np.arange(10, 400, dtype=np.int32))
    )
    bus.producer(job_id, "prompts").publish_many(prompts)
    fb_consumer, rollouts = read_all(bus, job_id, "rollouts", "feedback", 4, 120, output="feedback")
    for d in rollouts:
        g = d.group
        assert len(g.responses) == G and g.policy_version == 0 and len(g.prompt_token_ids) > 0
        for r in g.responses:
            assert len(r.token_ids) == len(r.logprobs) == 8 and r.truncated and np.all(r.logprobs <= 0)
    deadline = time.monotonic() + 30
    while not bus.dead_letters(job_id, "prompts") and time.monotonic() < deadline:
        time.sleep(0.2)
    letters = bus.dead_letters(job_id, "prompts")
    assert len(letters) == 1, [(d.message_id, d.reason) for d in letters]
    (dead,) = letters
    assert dead.message_id == "too-long" and "context window" in dead.reason

    # feedback (played here): a solution for response 0, nothing for response 1 -> scored.
    for d in rollouts:
        g = d.group
        g.responses[0].feedback = Feedback(solution_text="1, 2, 3")
        g.responses[1].feedback = Feedback()
        fb_consumer.commit(d, g)
    _, scored = read_all(bus, job_id, "scored", "learner", 4, 120)
    for d in scored:
        r0, r1 = d.group.responses
        assert r0.teacher is not None and r0.teacher.top_ids.shape == (8, 5)
        assert r1.teacher is None  # no teacher signal: skipped

    # HTTP: health, metrics, OpenAI-compatible completions of the current policy.
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        assert http.get("/rollout/health").json()["policy_version"] == 0
        assert "distil_rollout_committed_total 4" in http.get("/rollout/metrics").text
        assert "distil_teacher_scored_total 4" in http.get("/teacher/metrics").text
        body = http.post(
            "/rollout/v1/completions", json={"prompt": "Hello", "max_tokens": 5, "n": 2, "logprobs": 0}
        ).json()
        assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] == 10
        assert len(body["choices"][0]["logprobs"]["token_logprobs"]) == 5

        # A verified weight update through the deployment handle, as the learner sends it.
        alt = hf_model(vllm_tiny_alt_dir)
        ids = [1, 504, 3458, 282, 260, 2000, 17]
        from distil.engine import Probe

        probe = Probe(tuple(ids), tuple(token_logprobs(alt, ids)))
        weights = {k: v.detach() for k, v in alt.named_parameters()}
        handle = serve.get_deployment_handle("rollout", app_name="rollout")
        result = handle.update_weights.remote(weights, 1, probe).result(timeout_s=120)
        assert result.applied and result.probe_error < 0.01
        assert http.get("/rollout/health").json()["policy_version"] == 1
        teacher = serve.get_deployment_handle("teacher", app_name="teacher")
        assert teacher.update_weights.remote(weights, 1, probe).result(timeout_s=120).applied
        bad = Probe(tuple(ids), tuple(x - 1.0 for x in probe.expected_logprobs))
        with pytest.raises(Exception, match=r"(?s)probe mismatch.*version 2.*version 1"):
            handle.update_weights.remote(weights, 2, bad).result(timeout_s=120)

        # Unverified weights are never sampled from: the group waits for a verified update.
        bus.producer(job_id, "prompts").publish(Group(job_id=job_id, group_id="after", prompt_text="Hi"))
        time.sleep(2)
        assert bus.backlog(job_id, "rollouts") == 0
        assert http.get("/rollout/health").status_code == 503
        assert handle.update_weights.remote(weights, 3, probe).result(timeout_s=120).applied
    _, later = read_all(bus, job_id, "rollouts", "feedback", 1, 60)
    assert later[0].group.policy_version == 3
    serve.delete("rollout")
    serve.delete("teacher")
