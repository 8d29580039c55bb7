"""LoRA through peft: only adapters train, the EMA teacher averages effective deltas, the
published/checkpointed weights are the merged ones, and a LoRA run resumes exactly."""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.checkpoint import Progress
from services.learner.config import TrainConfig
from services.learner.ema import LoraEmaTeacher
from services.learner.lora import LoraSettings, apply_lora, delta_weights, effective_weights
from tests.learner.test_learner_step import samples

LORA = LoraSettings(r=4, alpha=8)
TRAIN = TrainConfig(lr=1e-2, teacher_ema_rate=0.25, lora=LORA)


def test_table6_defaults():
    s = LoraSettings()
    assert (s.r, s.alpha) == (64, 128)
    assert set(s.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_only_adapters_train_and_the_ema_tracks_effective_deltas(tiny_model_dir, tmp_path):
    trainer = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path)
    model = trainer.learner.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert isinstance(trainer.learner.ema, LoraEmaTeacher)
    assert all(d.abs().max() == 0 for d in trainer.learner.ema.deltas.values())  # B starts at 0
    trainer.step(samples(), rewards=[0.0] * 6)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_" in n for n in changed)
    assert any(".lora_B." in n for n in changed)
    # EMA of the effective delta, one step from 0 with rate r: r * (scale * B @ A)
    for name, d in delta_weights(model).items():
        torch.testing.assert_close(trainer.learner.ema.deltas[name], 0.25 * d)
    # the teacher's weights are base + EMA delta, under plain Hugging Face names
    teacher = trainer.learner.ema.weights()
    q = "model.layers.0.self_attn.q_proj"
    torch.testing.assert_close(
        teacher[f"{q}.weight"], before[f"{q}.base_layer.weight"] + 0.25 * delta_weights(model)[q]
    )
    assert not any(".lora_" in k or "base_layer" in k for k in teacher)


def test_effective_weights_reproduce_the_adapted_model(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reference = copy.deepcopy(base)
    _, model = apply_lora(base, LORA)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)
    merged = effective_weights(model)
    assert set(merged) == {n for n, _ in reference.named_parameters()}
    reference.load_state_dict(merged, strict=False)
    ids = torch.tensor([[1, 5, 9, 300, 2000]])
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)


def test_lora_checkpoint_resumes_exactly(tiny_model_dir, tmp_path):
    straight = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path / "a")
    for s in range(3):
        straight.step(samples(seed=s), rewards=[0.0] * 6)

    first = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path / "b")
    first.step(samples(seed=0), rewards=[0.0] * 6)
    path = first.save_checkpoint(Progress(policy_version=1))
    merged = AutoModelForCausalLM.from_pretrained(f"{path}/model", dtype=torch.float32)  # loads as plain HF
    for n, t in effective_weights(first.learner.policy.model).items():
        torch.testing.assert_close(dict(merged.named_parameters())[n], t)
    resumed = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path / "b")
    assert resumed.resume().policy_version == 1
    for s in (1, 2):
        resumed.step(samples(seed=s), rewards=[0.0] * 6)
    a = dict(straight.learner.policy.model.named_parameters())
    for n, p in resumed.learner.policy.model.named_parameters():
        torch.testing.assert_close(p, a[n], rtol=0, atol=0)
    for n, d in straight.learner.ema.deltas.items():
        torch.testing.assert_close(resumed.learner.ema.deltas[n], d, rtol=0, atol=0)
