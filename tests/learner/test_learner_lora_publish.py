"""Publishing a LoRA student: the rollout engine gets the adapter only (A/B + config) and a
real vLLM engine (CPU build, in a Ray actor) serves and verifies it; the EMA teacher goes
as merged full weights with a probe computed on those weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import ray
import torch

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.config import TrainConfig
from services.learner.lora import LoraSettings, effective_weights
from services.learner.publish import RayObjectStoreTransport, WeightTransport, WeightUpdate, make_probe
from tests.learner.test_learner_step import samples

TRAIN = TrainConfig(lr=1e-2, teacher_ema_rate=0.25, lora=LoraSettings(r=4, alpha=8))
CHECK_IDS = [1, 504, 3458, 282, 260, 2000, 17, 42, 99]
ADAPTER_NAME = re.compile(
    r"^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight$"
)


class Recording(WeightTransport):
    """Records every update, then hands it to ``inner`` (if any)."""

    def __init__(self, inner: WeightTransport | None = None):
        self.inner, self.sent = inner, []

    def send(self, update: WeightUpdate) -> list:
        self.sent.append(update)
        return self.inner.send(update) if self.inner is not None else []


@ray.remote
class LoraEngineReceiver:
    """A real vLLM engine (CPU build) with LoRA enabled, in a Ray actor."""

    def __init__(self, model_dir: str, adapter_dir: str):
        from distil.engine.config import EngineConfig, EngineLoraConfig
        from distil.engine.runner import EngineRunner

        cfg = EngineConfig(
            model=model_dir,
            enforce_eager=True,
            kv_cache_gib=0.5,
            max_model_len=256,
            max_num_seqs=4,
            lora=EngineLoraConfig(max_rank=8, adapter_dir=adapter_dir),
        )
        self.runner = EngineRunner(cfg)

    def update_adapter(self, adapter, version, probe):
        r = self.runner.update_adapter(adapter, version, probe)
        return {"version": r.version, "applied": r.applied, "probe_error": r.probe_error}

    def score(self, ids):
        return np.asarray(self.runner.score_tokens(ids))

    def close(self):
        self.runner.close()


def test_lora_teacher_gets_merged_weights_and_a_probe_of_them(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    transport = Recording()
    trainer = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path, transport=transport)
    trainer.step(samples(), rewards=[0.0] * 6)
    trainer.publish(1)
    student, teacher = transport.sent
    assert (student.kind, teacher.kind) == ("lora", "full")
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert set(teacher.tensors) == {n for n, _ in plain.named_parameters()}
    plain.load_state_dict(teacher.tensors, strict=False)
    want = make_probe(plain, trainer.probe_ids).expected_logprobs
    np.testing.assert_allclose(teacher.probe.expected_logprobs, want, rtol=1e-5, atol=1e-5)
    # base + EMA(delta) after one step at rate 0.25 is not the student (base + delta)
    model = trainer.learner.policy.model
    assert not np.allclose(teacher.probe.expected_logprobs, student.probe.expected_logprobs, atol=1e-4)
    torch.testing.assert_close(
        student.probe.expected_logprobs, make_probe(model, trainer.probe_ids).expected_logprobs
    )
    assert set(effective_weights(model)) == set(teacher.tensors)


@pytest.mark.slow
def test_lora_publish_sends_only_the_adapter_and_the_engine_verifies_it(ray_local, vllm_tiny_dir, tmp_path):
    engine = LoraEngineReceiver.remote(str(vllm_tiny_dir), str(tmp_path / "adapters"))
    try:
        transport = Recording(RayObjectStoreTransport({"student": [engine]}, timeout_s=300))
        trainer = LocalTrainer(
            vllm_tiny_dir, ObjectiveConfig(), TRAIN, tmp_path / "ckpt", transport=transport
        )
        before = ray.get(engine.score.remote(CHECK_IDS), timeout=300)
        trainer.step(samples(), rewards=[0.0] * 6)
        results = trainer.publish(1)

        student = transport.sent[0]
        model = trainer.learner.policy.model
        layers = model.config.num_hidden_layers
        assert student.target == "student" and student.kind == "lora" and student.version == 1
        assert student.lora_config["r"] == 4 and student.lora_config["lora_alpha"] == 8
        assert len(student.tensors) == 2 * 7 * layers and all(ADAPTER_NAME.match(n) for n in student.tensors)
        lora_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if ".lora_" in n)
        full_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if ".lora_" not in n)
        assert student.nbytes == lora_bytes < full_bytes / 20

        assert results[0]["applied"] and results[0]["version"] == 1 and results[0]["probe_error"] < 0.02
        learner_lp = np.asarray(make_probe(model, CHECK_IDS).expected_logprobs)
        after = ray.get(engine.score.remote(CHECK_IDS), timeout=300)
        assert np.abs(after - learner_lp).mean() < 0.02
        assert np.abs(after - before).mean() > np.abs(after - learner_lp).mean()  # the update moved it
    finally:
        ray.get(engine.close.remote(), timeout=120)
        ray.kill(engine)
