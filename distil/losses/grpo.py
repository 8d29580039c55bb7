"""GRPO: clipped ratio objective with group-normalised advantages, KL coefficient 0."""

from __future__ import annotations

import torch

from distil.losses.base import Objective
from distil.losses.batch import LossBatch
from distil.losses.common import LOG_RATIO_CLAMP, aggregate, masked_mean, token_mask
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs


class GRPO(Objective):
    name = "grpo"
    fields = frozenset({"clip_low", "clip_high"})
    needs_advantages = True
    per_sample_metrics = frozenset({"advantage_mean"})

    def loss(
        self, cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, normalizer: float | None
    ):
        # The policy ratio is taken at the rollout's sampling temperature (as the rollout's
        # log-probs are): on fresh data it is 1 whatever the temperature.
        tok_lp = student.sampling_token_logprobs
        mask = token_mask(batch, tok_lp.dtype, use_teacher_mask=False)
        old = tok_lp.detach() if batch.rollout_logprobs is None else batch.rollout_logprobs.to(tok_lp.dtype)
        ratio = torch.exp((tok_lp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        adv = batch.advantages.to(tok_lp.dtype)[:, None]
        unclipped = -adv * ratio
        clipped = -adv * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
        loss = aggregate(torch.maximum(unclipped, clipped), mask, cfg, normalizer)
        with torch.no_grad():
            clip_frac = (clipped > unclipped).to(mask.dtype)
        return loss, {
            "loss": float(loss.detach()),
            "ratio_mean": masked_mean(ratio.detach(), mask),
            "clip_frac": masked_mean(clip_frac, mask),
            "advantage_mean": float(batch.advantages.float().mean()),
        }
