"""A batch in which no sample has a teacher signal (teacher outage, an unscored sample alone
in its micro-batch, the FSDP padding pass): zero loss and zero gradient, but a loss that is
still connected to the student's log-probs so that backward runs through the model."""

from __future__ import annotations

import pytest
import torch

from distil.losses import (
    LossBatch,
    ObjectiveConfig,
    compute_loss,
    compute_loss_from_logprobs,
    gather_student_logprobs,
)

DISTILL = ["distil", "ce", "sdpo", "opsd"]


def unscored(B=3, T=6, V=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64).requires_grad_()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    batch = LossBatch(
        response_ids=torch.randint(0, V, (B, T), generator=g),
        response_mask=mask,
        rollout_logprobs=torch.full((B, T), -2.0, dtype=torch.float64),
        teacher_mask=torch.zeros(B, dtype=torch.bool),  # no sample has a teacher signal
        group_ids=torch.zeros(B, dtype=torch.long),
    )
    return logits, batch


@pytest.mark.parametrize("name", DISTILL)
def test_no_teacher_signal_gives_zero_loss_and_zero_gradient(name):
    logits, batch = unscored()
    student = gather_student_logprobs(logits, batch.response_ids, None)
    out = compute_loss_from_logprobs(ObjectiveConfig(name=name), student, batch, normalizer=7.0)
    assert out.loss.item() == 0.0
    assert out.loss.requires_grad  # backward still runs (FSDP's collectives need it)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert g.abs().max() == 0
    assert out.metrics["tokens"] == 16.0 and out.metrics["teacher_frac"] == 0.0
    assert "rollout_kl" in out.metrics


@pytest.mark.parametrize("name", DISTILL)
def test_no_teacher_signal_from_logits(name):
    logits, batch = unscored()
    out = compute_loss(ObjectiveConfig(name=name), logits, batch)
    assert out.loss.item() == 0.0
    (g,) = torch.autograd.grad(out.loss, logits)
    assert g.abs().max() == 0


def test_a_non_finite_log_prob_does_not_make_the_zero_loss_nan():
    """The zero loss is not ``x * 0``: a NaN log-prob in an unscored micro-batch leaves it 0
    (a NaN loss would make the learner skip the whole step)."""
    logits, batch = unscored()
    student = gather_student_logprobs(logits.detach(), batch.response_ids, None)
    student.token_logprobs = student.token_logprobs.clone().requires_grad_()
    with torch.no_grad():
        student.token_logprobs[0, 0] = float("nan")
    out = compute_loss_from_logprobs(ObjectiveConfig(name="distil"), student, batch)
    assert out.loss.item() == 0.0
    (g,) = torch.autograd.grad(out.loss, student.token_logprobs)
    assert torch.equal(g, torch.zeros_like(g))


def test_a_missing_teacher_without_teacher_mask_is_still_an_error():
    """No teacher_mask at all means the caller forgot the teacher, not that no sample has one."""
    logits, batch = unscored()
    batch.teacher_mask = None
    student = gather_student_logprobs(logits, batch.response_ids, None)
    with pytest.raises(ValueError, match="topk"):
        compute_loss_from_logprobs(ObjectiveConfig(name="distil"), student, batch)
    with pytest.raises(ValueError, match="teacher_topk_ids"):
        compute_loss(ObjectiveConfig(name="distil"), logits, batch)


def test_a_teacher_mask_with_a_scored_sample_needs_the_teacher():
    logits, batch = unscored()
    batch.teacher_mask = torch.tensor([True, False, False])
    student = gather_student_logprobs(logits, batch.response_ids, None)
    with pytest.raises(ValueError, match="topk"):
        compute_loss_from_logprobs(ObjectiveConfig(name="distil"), student, batch)
