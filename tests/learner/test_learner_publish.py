"""Weights published by the learner reach a real vLLM engine through Ray's object store,
are verified there with the learner's probe, and the engine's log-probs then match the
learner's; a wrong probe is an error naming both versions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import ray
import torch

from distil.engine.types import Probe
from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.config import TrainConfig
from services.learner.publish import (
    RayObjectStoreTransport,
    WeightPublishError,
    WeightUpdate,
    make_probe,
    probe_skeleton,
)
from services.learner.stage import LearnerStage, StageConfig
from tests.engine.engine_helpers import EngineHost, tiny_engine_config
from tests.learner.test_learner_stage import events, scored_group

EngineReceiver = ray.remote(EngineHost)  # a real vLLM engine (CPU build) in a Ray actor


@pytest.mark.slow
def test_published_weights_are_verified_and_served(ray_local, bus, job_id, vllm_tiny_dir, tmp_path):
    engine = EngineReceiver.remote(tiny_engine_config(vllm_tiny_dir, kv_cache_gib=1, max_num_seqs=4))
    try:
        transport = RayObjectStoreTransport({"student": [engine]}, timeout_s=300)
        trainer = LocalTrainer(
            vllm_tiny_dir, ObjectiveConfig(), TrainConfig(lr=3e-2), tmp_path, transport=transport
        )
        probe_ids = trainer.probe_ids
        before = ray.get(engine.score.remote(probe_ids), timeout=300)
        bus.producer(job_id, "scored").publish_many([scored_group(job_id, seed=s) for s in (1, 2)])
        stage = LearnerStage(bus, job_id, trainer, StageConfig(groups_per_step=2))
        metrics = stage.step()
        assert metrics["time_weight_push"] > 0
        assert "WeightsUpdated" in [type(e).__name__ for e in events(bus, job_id)]

        model = trainer.learner.policy.model
        check_ids = [1, 504, 3458, 282, 260, 2000, 17, 42, 99]
        learner_lp = np.asarray(make_probe(model, check_ids).expected_logprobs)
        engine_lp = ray.get(engine.score.remote(check_ids), timeout=300)
        assert np.abs(engine_lp - learner_lp).mean() < 0.02
        after = ray.get(engine.score.remote(probe_ids), timeout=300)
        assert np.abs(after - before).mean() > 0.05  # the update really changed what is served

        wrong = Probe(token_ids=tuple(probe_ids), expected_logprobs=tuple(float(x) - 1.0 for x in after))
        weights = {k: v.detach() for k, v in model.named_parameters()}
        with pytest.raises(WeightPublishError, match=r"(?s)probe mismatch.*version 2.*version 1"):
            transport.send(WeightUpdate("student", 2, weights, wrong))
    finally:
        ray.get(engine.close.remote(), timeout=120)
        ray.kill(engine)


def test_teacher_probe_uses_the_ema_parameters(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    params = {n: p.detach() for n, p in other.named_parameters()}
    ids = [1, 2, 3, 4, 5, 6]
    got = make_probe(model, ids, params)
    want = make_probe(other, ids)
    np.testing.assert_allclose(got.expected_logprobs, want.expected_logprobs, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got.expected_logprobs, make_probe(model, ids).expected_logprobs)


def test_probe_of_full_tensors_on_a_skeleton_matches_the_model(tiny_model_dir):
    """How a sharded (FSDP2) learner probes: the gathered tensors on a meta-device skeleton,
    never the sharded module's forward, which every rank would have to join."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    skeleton = probe_skeleton(model)
    assert all(p.is_meta for p in skeleton.parameters())
    full = {n: p.detach().clone() for n, p in model.named_parameters()} | dict(model.named_buffers())
    ids = [1, 2, 3, 4, 5, 6]
    got = make_probe(skeleton, ids, full)
    want = make_probe(model, ids)
    np.testing.assert_allclose(got.expected_logprobs, want.expected_logprobs, rtol=1e-6, atol=1e-6)
