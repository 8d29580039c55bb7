"""Pieces shared by the objectives: masks, importance weights, aggregation."""

from __future__ import annotations

import torch

from distil.losses.batch import LossBatch
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs, support_logprobs

LOG_RATIO_CLAMP = 20.0


def token_mask(batch: LossBatch, dtype: torch.dtype, *, use_teacher_mask: bool) -> torch.Tensor:
    """[B,T] float mask of the tokens that contribute to the loss."""
    mask = batch.response_mask
    if use_teacher_mask and batch.teacher_mask is not None:
        mask = mask & batch.teacher_mask[:, None]
    return mask.to(dtype)


def log_ratio(token_logprobs: torch.Tensor, batch: LossBatch) -> torch.Tensor:
    """Detached log(pi_theta(y_t) / pi_rollout(y_t)), clamped to +-20; 0 when no rollout log-probs.

    ``token_logprobs`` must be at the rollout's sampling temperature
    (``StudentLogprobs.sampling_token_logprobs``), as the rollout's log-probs are.
    """
    if batch.rollout_logprobs is None:
        return torch.zeros_like(token_logprobs).detach()
    diff = token_logprobs.detach() - batch.rollout_logprobs.to(token_logprobs.dtype)
    return diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def is_weights(token_logprobs: torch.Tensor, batch: LossBatch, cfg: ObjectiveConfig):
    """Truncated importance weights min(ratio, is_clip) (detached) and the raw ratios."""
    ratio = log_ratio(token_logprobs, batch).exp()
    weight = ratio if cfg.is_clip is None else ratio.clamp(max=cfg.is_clip)
    return weight, ratio


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, cfg: ObjectiveConfig, normalizer: float | None
) -> torch.Tensor:
    """Token-mean over valid tokens, or mean over sequences of per-sequence token-means.

    ``normalizer`` overrides the denominator (valid tokens, or sequences with a valid
    token) so that a learner accumulating micro-batches can normalise by the whole
    mini-batch.
    """
    masked = per_token * mask
    if cfg.aggregation == "token_mean":
        denom = mask.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=mask.dtype)
        return masked.sum() / denom.clamp(min=1.0)
    counts = mask.sum(-1)
    per_seq = masked.sum(-1) / counts.clamp(min=1.0)
    denom = (
        (counts > 0).sum().to(mask.dtype)
        if normalizer is None
        else torch.as_tensor(normalizer, dtype=mask.dtype)
    )
    return per_seq.sum() / denom.clamp(min=1.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    n = mask.sum()
    return float((x * mask).sum() / n) if n > 0 else 0.0


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float(x[mask > 0].max()) if (mask > 0).any() else 0.0


def is_metrics(ratio: torch.Tensor, mask: torch.Tensor, cfg: ObjectiveConfig) -> dict[str, float]:
    clipped = (ratio > cfg.is_clip).to(mask.dtype) if cfg.is_clip is not None else torch.zeros_like(mask)
    return {
        "is_ratio_mean": masked_mean(ratio, mask),
        "is_ratio_max": masked_max(ratio, mask),
        "is_clip_frac": masked_mean(clipped, mask),
    }


def teacher_support(cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch):
    """For distillation objectives: the valid-token mask (response AND teacher mask) and the
    student's and teacher's log-probs over the K(+1) buckets."""
    mask = token_mask(batch, student.token_logprobs.dtype, use_teacher_mask=True)
    lp_s, lp_t = support_logprobs(
        student.topk_logprobs,
        batch.teacher_topk_logprobs,
        tail=cfg.topk_tail,
        vocab_size=student.vocab_size,
        samples=cfg.teacher_samples,
    )
    return mask, lp_s, lp_t
