"""``distil.losses``: the objectives (DistIL, CE, SDPO, OPSD, GRPO, SFT) behind one API.

    from distil.losses import ObjectiveConfig, LossBatch, compute_loss
    out = compute_loss(ObjectiveConfig(name="distil"), student_logits, LossBatch(...))
    out.loss.backward(); out.metrics

See docs/objectives.md for each objective's formula, defaults and their sources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from distil.losses.advantages import group_advantages
from distil.losses.base import Objective
from distil.losses.batch import LossBatch, sanitize, validate
from distil.losses.common import masked_mean, token_mask
from distil.losses.config import ObjectiveConfig, ObjectiveName
from distil.losses.distil import group_baseline as group_credit_baseline
from distil.losses.distil import sample_credits
from distil.losses.registry import objective_class
from distil.losses.support import (
    StudentLogprobs,
    chunked_student_logprobs,
    gather_student_logprobs,
    support_logprobs,
)

__all__ = [
    "LossBatch",
    "LossOutput",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveName",
    "StudentLogprobs",
    "chunked_student_logprobs",
    "combine_metrics",
    "compute_loss",
    "compute_loss_from_logprobs",
    "future_credits",
    "gather_student_logprobs",
    "group_advantages",
    "group_credit_baseline",
    "objective_class",
    "sampled_teacher_targets",
    "support_logprobs",
]


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float]
    # For each metric that is a mean: how many items it averages (valid tokens, teacher-scored
    # tokens, or samples), so means over several batches combine exactly (``combine_metrics``).
    # Metrics without a weight are ``loss``, counts (``tokens``, ``teacher_tokens``) and
    # maxima (``*_max``, ``rollout_max_abs_diff``).
    weights: dict[str, float] = field(default_factory=dict)


COUNTS = frozenset({"tokens", "teacher_tokens"})


def _is_maximum(name: str) -> bool:
    return name.endswith("_max") or name == "rollout_max_abs_diff"


def combine_metrics(outputs: Sequence[LossOutput]) -> dict[str, float]:
    """The metrics of several batches (a learner's micro-batches) as if computed on their union:
    each mean weighted by what it averages (``ce_mean`` by teacher-scored tokens, not by
    every response token), counts summed, maxima maxed. ``loss`` is left to the caller (it
    depends on the normaliser). A mean whose items all sum to zero weight is left out."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    out: dict[str, float] = {}
    for o in outputs:
        for k, v in o.metrics.items():
            if k == "loss":
                continue
            if k in o.weights:
                w = o.weights[k]
                sums[k] = sums.get(k, 0.0) + v * w
                weights[k] = weights.get(k, 0.0) + w
            elif k in COUNTS:
                out[k] = out.get(k, 0.0) + v
            elif _is_maximum(k):
                out[k] = max(out.get(k, v), v)
            else:
                raise ValueError(f"metric {k!r} has no weight and is neither a count nor a maximum")
    out |= {k: sums[k] / w for k, w in weights.items() if w > 0}
    return out


def compute_loss(
    config: ObjectiveConfig,
    student_logits: torch.Tensor,
    batch: LossBatch,
    *,
    normalizer: float | None = None,
) -> LossOutput:
    """Loss of ``config``'s objective for the student's ``[B,T,V]`` logits (position t predicts y_t)."""
    if not isinstance(student_logits, torch.Tensor) or student_logits.dim() != 3:
        shape = (
            list(student_logits.shape) if isinstance(student_logits, torch.Tensor) else type(student_logits)
        )
        raise ValueError(f"student_logits must have shape [B,T,V], got {shape}")
    if not student_logits.is_floating_point():
        raise ValueError(f"student_logits must be a float tensor, got dtype {student_logits.dtype}")
    obj = objective_class(config.name)
    B, T, V = student_logits.shape
    _validate(obj, config, batch, B, T, V, None)
    student = gather_student_logprobs(
        student_logits,
        batch.response_ids,
        batch.teacher_topk_ids if obj.needs_teacher else None,
        batch.rollout_temperature,
    )
    return _finish(obj, config, student, batch, normalizer)


def compute_loss_from_logprobs(
    config: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, *, normalizer: float | None = None
) -> LossOutput:
    """Same as ``compute_loss`` from log-probs gathered elsewhere (e.g. chunk-wise by the learner)."""
    obj = objective_class(config.name)
    if student.token_logprobs.dim() != 2:
        raise ValueError(
            f"student.token_logprobs must have shape [B,T], got {list(student.token_logprobs.shape)}"
        )
    B, T = student.token_logprobs.shape
    if obj.needs_teacher and not _no_teacher_signal(obj, batch):
        if student.topk_logprobs is None:
            raise ValueError("student.topk_logprobs [B,T,K] is required: gather it at batch.teacher_topk_ids")
        if tuple(student.topk_logprobs.shape[:2]) != (B, T):
            raise ValueError(
                f"student.topk_logprobs must have shape [{B},{T},K], got {list(student.topk_logprobs.shape)}"
            )
    if batch.rollout_temperature is not None and student.tempered_token_logprobs is None:
        raise ValueError(
            "batch.rollout_temperature is set but student.tempered_token_logprobs is missing: gather the "
            "student's log-probs with temperature=batch.rollout_temperature, or the importance ratio "
            "would compare log-probs at two temperatures"
        )
    K = student.topk_logprobs.shape[-1] if obj.needs_teacher and student.topk_logprobs is not None else None
    _validate(obj, config, batch, B, T, student.vocab_size, K)
    return _finish(obj, config, student, batch, normalizer)


def future_credits(
    config: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """DistIL's detached future credit C [B,T] (before any baseline) and its valid-token mask
    [B,T] (response AND teacher mask), as the loss computes them.

    For a baseline over whole groups when the loss sees only part of a group at a time (the
    learner's micro-batches): compute the credits of every sample first (no gradient), then
    ``group_credit_baseline(credit, mask, group_ids)`` over all of them, and pass each
    sample's row as ``LossBatch.credit_baseline_values``.
    """
    obj = objective_class(config.name)
    if "credit_baseline" not in obj.fields or not config.future_credit:
        raise ValueError(f"objective {config.name!r} has no future credit")
    B, T = student.token_logprobs.shape
    if student.topk_logprobs is None:
        raise ValueError("student.topk_logprobs [B,T,K] is required: gather it at batch.teacher_topk_ids")
    probe = LossBatch(**{**batch.__dict__, "credit_baseline_values": None})
    validate(
        probe,
        batch_size=B,
        length=T,
        vocab_size=student.vocab_size,
        needs_teacher=True,
        needs_advantages=False,
        needs_groups=False,
        topk=student.topk_logprobs.shape[-1],
    )
    return sample_credits(config, student, sanitize(probe))


def _no_teacher_signal(obj: type[Objective], batch: LossBatch) -> bool:
    """A distillation batch in which no sample has a teacher signal: no top-K at all and a
    ``teacher_mask`` that says so (all False). A teacher outage, an unscored sample alone in
    a learner micro-batch, the FSDP padding pass over one. Without ``teacher_mask`` a missing
    top-K stays an error (the caller forgot the teacher)."""
    return (
        obj.needs_teacher
        and batch.teacher_topk_ids is None
        and isinstance(batch.teacher_mask, torch.Tensor)
        and not bool(batch.teacher_mask.any())
    )


def _zero_weight_loss(student: StudentLogprobs) -> torch.Tensor:
    """0, with zero gradient, but connected to the student's log-probs so that backward still
    runs through the model (every FSDP rank must run the same collectives). ``where``, not
    ``* 0``: a non-finite log-prob cannot turn the value into NaN."""
    lp = student.token_logprobs
    return torch.where(torch.zeros_like(lp, dtype=torch.bool), lp, torch.zeros_like(lp)).sum()


def _validate(obj, config, batch, B, T, V, K) -> None:
    validate(
        batch,
        batch_size=B,
        length=T,
        vocab_size=V,
        needs_teacher=obj.needs_teacher and not _no_teacher_signal(obj, batch),
        needs_advantages=obj.needs_advantages,
        needs_groups=config.credit_baseline == "group_mean" and "credit_baseline" in obj.fields,
        topk=K,
    )


def _finish(
    obj: type[Objective], config, student: StudentLogprobs, batch: LossBatch, normalizer
) -> LossOutput:
    if _no_teacher_signal(obj, batch):  # zero weight: no loss, no gradient, no objective metrics
        loss, metrics = _zero_weight_loss(student), {"loss": 0.0}
    else:
        loss, metrics = obj().loss(config, student, sanitize(batch), normalizer)
    dtype = student.token_logprobs.dtype
    mask = token_mask(batch, dtype, use_teacher_mask=False)
    lengths = mask.sum(-1)
    n_tokens, n_samples = float(lengths.sum()), float(len(lengths))
    # The objective's means are over its valid tokens: for a distillation objective the
    # teacher-scored ones (response mask AND teacher mask), which is what they weigh when
    # micro-batches are combined; a few are per sample.
    scored = float(token_mask(batch, dtype, use_teacher_mask=obj.needs_teacher).sum())
    weights = {
        k: n_samples if k in obj.per_sample_metrics else scored
        for k in metrics
        if k != "loss" and not _is_maximum(k)
    }
    metrics["tokens"] = n_tokens
    metrics["response_length_mean"] = float(lengths.mean()) if len(lengths) else 0.0
    metrics["response_length_max"] = float(lengths.max()) if len(lengths) else 0.0
    weights["response_length_mean"] = n_samples
    if student.entropy is not None:
        metrics["entropy_mean"] = masked_mean(student.entropy, mask)
        weights["entropy_mean"] = n_tokens
    if batch.rollout_logprobs is not None and mask.sum() > 0:
        # Rollout engine vs learner on the sampled tokens: KL(rollout || learner) estimated on
        # the rollout's own samples, and the largest per-token gap.
        with torch.no_grad():
            gap = batch.rollout_logprobs.to(mask.dtype) - student.sampling_token_logprobs.detach()
            valid = mask > 0
            metrics["rollout_kl"] = float(gap[valid].mean())
            metrics["rollout_max_abs_diff"] = float(gap[valid].abs().max())
            weights["rollout_kl"] = n_tokens
    if obj.needs_teacher:
        tm = batch.teacher_mask
        metrics["teacher_frac"] = float(tm.float().mean()) if tm is not None and len(tm) else 1.0
        weights["teacher_frac"] = n_samples
        metrics["teacher_tokens"] = scored
    return LossOutput(loss=loss, metrics=metrics, weights=weights)


def sampled_teacher_targets(sampled_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for a black-box teacher that returns K sampled next tokens per position.

    Each sample gets weight 1/K, so the forward cross-entropy becomes the unbiased sample
    estimate -1/K sum_k log p_theta(a_k | s_t) (the paper's black-box form; K=1 is one-hot).
    Use with ``ObjectiveConfig(teacher_samples=True)``. Returns ``(teacher_topk_ids, teacher_topk_logprobs)``.
    """
    if sampled_ids.dim() != 3:
        raise ValueError(f"sampled_ids must have shape [B,T,K], got {list(sampled_ids.shape)}")
    K = sampled_ids.shape[-1]
    logprobs = torch.full(sampled_ids.shape, -math.log(K), dtype=torch.float32)
    return sampled_ids.long(), logprobs
