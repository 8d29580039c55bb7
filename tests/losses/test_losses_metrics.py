"""Metrics of several batches combine exactly (#22 item 10): each mean by what it averages."""

from __future__ import annotations

import pytest
import torch

from distil.losses import LossBatch, ObjectiveConfig, combine_metrics, compute_loss, group_advantages
from tests.losses.test_losses_edges import make


def batch_for(name, logits, batch):
    if name == "grpo":
        batch.advantages = group_advantages(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 0]))
    batch.rollout_logprobs = (
        torch.log_softmax(logits.detach(), -1).gather(-1, batch.response_ids[..., None])[..., 0] - 0.1
    )
    return batch


def rows(batch: LossBatch, keep) -> LossBatch:
    return LossBatch(**{k: v[keep] if v is not None else None for k, v in batch.__dict__.items()})


@pytest.mark.parametrize("name", ["distil", "ce", "sdpo", "opsd", "grpo", "sft"])
def test_split_batches_combine_to_the_whole_batchs_metrics(name):
    logits, batch, _ = make(B=3, T=6)
    batch = batch_for(name, logits, batch)
    batch.response_mask[0, 4:] = False  # different lengths
    batch.teacher_mask = torch.tensor([True, False, True])  # one unscored sample
    whole = compute_loss(ObjectiveConfig(name=name), logits, batch)
    parts = [compute_loss(ObjectiveConfig(name=name), logits[k], rows(batch, k)) for k in ([0, 1], [2])]
    got = combine_metrics(parts)
    assert set(got) == set(whole.metrics) - {"loss"}
    for key, want in whole.metrics.items():
        if key != "loss":
            assert got[key] == pytest.approx(want, rel=1e-6, abs=1e-12), key  # float32 fractions


def test_ce_mean_weighs_teacher_scored_tokens_only():
    logits, batch, _ = make(B=2, T=6)
    batch.teacher_mask = torch.tensor([True, False])
    out = compute_loss(ObjectiveConfig(name="ce"), logits, batch)
    alone = compute_loss(ObjectiveConfig(name="ce"), logits[:1], rows(batch, [0]))
    assert out.metrics["ce_mean"] == pytest.approx(alone.metrics["ce_mean"], rel=1e-12)
    assert out.weights["ce_mean"] == out.metrics["teacher_tokens"] == 6.0
    assert out.metrics["tokens"] == 12.0 and out.weights["entropy_mean"] == 12.0
