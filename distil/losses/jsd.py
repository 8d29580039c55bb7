"""The generalised Jensen-Shannon family on the top-K(+tail) support (SDPO, OPSD)."""

from __future__ import annotations

import math

import torch

from distil.losses.base import Objective
from distil.losses.batch import LossBatch
from distil.losses.common import aggregate, is_metrics, is_weights, masked_mean, teacher_support
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs


def generalized_jsd(lp_s: torch.Tensor, lp_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """D_alpha(S, T) summed over the last dim.

    alpha = 0: KL(T||S); alpha = 1: KL(S||T); otherwise, with M = (1-alpha) S + alpha T,
    alpha KL(T||M) + (1-alpha) KL(S||M).
    """
    p_s, p_t = lp_s.exp(), lp_t.exp()
    if alpha == 0.0:
        return (p_t * (lp_t - lp_s)).sum(-1)
    if alpha == 1.0:
        return (p_s * (lp_s - lp_t)).sum(-1)
    lp_m = torch.logsumexp(torch.stack([lp_s + math.log(1.0 - alpha), lp_t + math.log(alpha)]), dim=0)
    return alpha * (p_t * (lp_t - lp_m)).sum(-1) + (1.0 - alpha) * (p_s * (lp_s - lp_m)).sum(-1)


class GeneralizedJSD(Objective):
    """Local divergence per token, IS-weighted; subclasses only set the default alpha."""

    fields = frozenset({"topk_tail", "alpha", "is_clip"})
    needs_teacher = True
    needs_teacher_logprobs = True

    def loss(
        self, cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, normalizer: float | None
    ):
        mask, lp_s, lp_t = teacher_support(cfg, student, batch)
        div = generalized_jsd(lp_s, lp_t, cfg.alpha)
        weight, ratio = is_weights(student.sampling_token_logprobs, batch, cfg)
        loss = aggregate(weight * div, mask, cfg, normalizer)
        with torch.no_grad():
            kl = (lp_t.exp() * (lp_t - lp_s)).sum(-1)
        return loss, {
            "loss": float(loss.detach()),
            "divergence_mean": masked_mean(div.detach(), mask),
            "kl_teacher_student": masked_mean(kl, mask),
            **is_metrics(ratio, mask, cfg),
        }
