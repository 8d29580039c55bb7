"""DistIL: forward cross-entropy to the teacher plus the future-credit term (paper eq. 5)."""

from __future__ import annotations

import torch

from distil.losses.base import Objective
from distil.losses.batch import LossBatch
from distil.losses.common import aggregate, is_metrics, is_weights, masked_max, masked_mean, teacher_support
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs


def future_credit(ce: torch.Tensor, mask: torch.Tensor, *, length_normalize: bool) -> torch.Tensor:
    """C_t = (1 / max(L - t - 1, 1)) * sum_{tau > t, valid} CE_tau, detached, per sequence.

    ``t`` counts valid tokens only, so padding anywhere (middle or end) neither adds to the
    sum nor to the count; the last valid token gets 0. Without ``length_normalize`` the
    plain suffix sum (the exact estimator of eq. 4).
    """
    ce = ce.detach().clamp(min=0.0) * mask
    suffix = ce.flip(-1).cumsum(-1).flip(-1) - ce
    if length_normalize:
        later = mask.flip(-1).cumsum(-1).flip(-1) - mask
        suffix = suffix / later.clamp(min=1.0)
    return suffix * mask


def group_baseline(credit: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Leave-one-out mean credit of the other samples of the same group at the same position.

    It does not depend on the sample's own actions, so subtracting it keeps the estimator
    unbiased while reducing variance. ``credit``/``mask`` [B,T] must hold the whole group:
    a sibling missing from them (in another micro-batch) changes the baseline.
    """
    same = group_ids[:, None] == group_ids[None, :]
    others = (same & ~torch.eye(len(group_ids), dtype=torch.bool, device=same.device)).to(credit.dtype)
    total = others @ (credit * mask)
    count = others @ mask
    return torch.where(count > 0, total / count.clamp(min=1.0), torch.zeros_like(total)) * mask


def local_ce(cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch):
    """The valid-token mask, the K(+1)-bucket log-probs and CE_t [B,T] (differentiable)."""
    mask, lp_s, lp_t = teacher_support(cfg, student, batch)
    return mask, lp_s, lp_t, -(lp_t.exp() * lp_s).sum(-1)


def sample_credits(cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch):
    """Detached future credit C [B,T] (before any baseline) and its valid-token mask, exactly
    as ``DistIL.loss`` computes them: what a baseline over whole groups is built from."""
    with torch.no_grad():
        mask, _, _, ce = local_ce(cfg, student, batch)
        return future_credit(ce, mask, length_normalize=cfg.length_normalize), mask


class DistIL(Objective):
    name = "distil"
    fields = frozenset(
        {"topk_tail", "teacher_samples", "future_credit", "length_normalize", "credit_baseline", "is_clip"}
    )
    defaults = {"future_credit": True}
    needs_teacher = True

    @classmethod
    def check(cls, cfg: ObjectiveConfig) -> None:
        if cfg.teacher_samples and "topk_tail" in cfg.model_fields_set and cfg.topk_tail:
            raise ValueError("teacher_samples=True has no tail bucket; leave topk_tail unset or false")

    def loss(
        self, cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, normalizer: float | None
    ):
        # The score term's log-prob is of the policy that sampled y_t (softmax(z / tau) at the
        # rollout temperature, as the IS ratio's): with the temperature-1 log-prob a constant
        # credit would have expected gradient C * (pi^tau - pi_1) != 0. CE_t stays at
        # temperature 1 (the student's distribution the teacher is matched against).
        tok_lp = student.sampling_token_logprobs
        mask, lp_s, lp_t, ce = local_ce(cfg, student, batch)
        p_t = lp_t.exp()
        per_token = ce
        metrics: dict[str, float] = {}
        if cfg.future_credit:
            credit = future_credit(ce, mask, length_normalize=cfg.length_normalize)
            if cfg.credit_baseline == "group_mean":
                # Precomputed over whole groups (the learner, whose micro-batches split groups),
                # else the siblings in this batch.
                base = batch.credit_baseline_values
                if base is None:
                    base = group_baseline(credit, mask, batch.group_ids)
                credit = credit - base.to(credit.dtype) * mask
            per_token = per_token + credit * tok_lp
            metrics |= {"credit_mean": masked_mean(credit, mask), "credit_max": masked_max(credit, mask)}
        weight, ratio = is_weights(student.sampling_token_logprobs, batch, cfg)
        loss = aggregate(weight * per_token, mask, cfg, normalizer)
        metrics |= {
            "loss": float(loss.detach()),
            "ce_mean": masked_mean(ce.detach(), mask),
            **is_metrics(ratio, mask, cfg),
        }
        if cfg.teacher_samples:
            # lp_t holds 1/K sample weights, not the teacher's log-probs: KL(pi_T || pi) =
            # CE - H(pi_T) needs the teacher's entropy, which samples do not give. Not defined:
            # not reported, and this flag says why (NaN would not survive the JSON metrics).
            metrics["teacher_samples"] = 1.0
        else:
            with torch.no_grad():
                metrics["kl_teacher_student"] = masked_mean((p_t * (lp_t - lp_s)).sum(-1), mask)
        return loss, metrics
