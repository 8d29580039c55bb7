"""A rollout engine started while its job already has published weights (the replacement of
a replica that died) samples nothing from its initial weights: it asks the learner for the
job's weights and waits for them (real vLLM CPU engine, real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from distil.bus import Group, weights
from tests.conftest import fast_bus_config
from tests.engine.engine_helpers import hf_model, token_logprobs

pytestmark = pytest.mark.slow


def test_a_restarted_rollout_engine_waits_for_the_jobs_weights(redis_url, bus, job_id, vllm_tiny_dir):
    from distil.engine import EngineConfig, Probe, SamplingConfig
    from distil.engine.bus_loop import LoopStats, start_consumer
    from distil.engine.runner import EngineRunner
    from services.rollout.stage import RolloutStage

    weights.record_published(bus, job_id, 3)  # the job's learner has sent version 3 before
    runner = EngineRunner(
        EngineConfig(model=str(vllm_tiny_dir), enforce_eager=True, kv_cache_gib=0.5, max_model_len=256)
    )
    stage = RolloutStage(runner, SamplingConfig(n=2, max_tokens=4), unverified_wait_s=120)
    stop = threading.Event()
    # Groups wait here for seconds: nothing may claim them meanwhile.
    config = fast_bus_config(redis_url, claim_idle_s=120.0).model_dump(mode="json")
    client, thread = start_consumer(config, job_id, ("prompts", "rollout", "rollouts"), stage.handle,
                                    runner._loop, stop=stop, max_inflight=4, permanent=(ValueError,),
                                    stats=LoopStats(), name="rollout-test",
                                    expect_weights=runner.engine.expect_version)  # fmt: skip
    try:
        assert not runner.engine.verified and "version 3" in runner.engine.unverified_reason()
        assert weights.take_resend_request(bus, job_id)  # it asked the learner for them
        bus.producer(job_id, "prompts").publish(Group(job_id=job_id, group_id="g", prompt_text="Hi"))
        time.sleep(3)
        assert bus.backlog(job_id, "rollouts") == 0  # nothing sampled from the initial weights

        # The learner sends its weights (here: the same model, as version 3); sampling starts.
        model = hf_model(vllm_tiny_dir)
        ids = [1, 504, 3458, 282, 260, 2000, 17]
        probe = Probe(tuple(ids), tuple(token_logprobs(model, ids)))
        assert runner.update_weights([(k, v.detach()) for k, v in model.named_parameters()], 3, probe).applied
        consumer = bus.consumer(job_id, "rollouts", group="feedback")
        deadline, got = time.monotonic() + 120, []
        while not got and time.monotonic() < deadline:
            got = consumer.read(count=1, block_s=0.5)
        assert got, "waited 120s for the group to be sampled after the weights arrived"
        assert got[0].group.group_id == "g" and got[0].group.policy_version == 3
    finally:
        stop.set()
        thread.join(timeout=60)
        runner.close()
        client.close()
