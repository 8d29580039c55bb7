"""Activation checkpointing recomputes activations in backward: same loss, same update."""

from __future__ import annotations

import torch

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.config import TrainConfig
from services.learner.lora import LoraSettings
from tests.learner.test_learner_step import samples


def _step(tiny_model_dir, tmp_path, **train):
    trainer = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TrainConfig(lr=1e-3, **train), tmp_path)
    metrics = trainer.step(samples(), rewards=[0.0] * 6)
    return trainer, metrics


def test_checkpointing_gives_the_same_step(tiny_model_dir, tmp_path):
    plain, m0 = _step(tiny_model_dir, tmp_path / "plain")
    ckpt, m1 = _step(tiny_model_dir, tmp_path / "ckpt", activation_checkpointing=True)
    assert ckpt.learner.policy.model.is_gradient_checkpointing
    assert not plain.learner.policy.model.is_gradient_checkpointing
    assert abs(m0["loss"] - m1["loss"]) < 1e-6 and abs(m0["grad_norm"] - m1["grad_norm"]) < 1e-5
    a = dict(plain.learner.policy.model.named_parameters())
    for name, p in ckpt.learner.policy.model.named_parameters():
        torch.testing.assert_close(p, a[name], atol=1e-6, rtol=1e-5)


def test_checkpointing_with_lora_trains_the_adapters(tiny_model_dir, tmp_path):
    trainer, m = _step(
        tiny_model_dir, tmp_path, activation_checkpointing=True, lora=LoraSettings(r=4, alpha=8)
    )
    assert torch.isfinite(torch.tensor(m["loss"])) and m["grad_norm"] > 0
