"""``LossBatch``: what an objective needs besides the student's logits, with validation.

Every tensor is checked for shape, dtype and range before any arithmetic, and a bad one
raises ``ValueError`` naming the field and the expected shape; nothing is broadcast
silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

_INT = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)
_FLOAT = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


@dataclass
class LossBatch:
    response_ids: torch.Tensor  # [B,T] int, the sampled tokens y_t
    response_mask: torch.Tensor  # [B,T] bool
    teacher_topk_ids: torch.Tensor | None = None  # [B,T,K] int
    teacher_topk_logprobs: torch.Tensor | None = None  # [B,T,K] float, normalised over the vocabulary
    rollout_logprobs: torch.Tensor | None = None  # [B,T] float; None = ratio 1
    advantages: torch.Tensor | None = None  # [B] float (grpo)
    teacher_mask: torch.Tensor | None = None  # [B] bool, samples with a teacher signal
    group_ids: torch.Tensor | None = None  # [B] int, for credit_baseline="group_mean"
    # [B] float, the temperature of rollout_logprobs' distribution per sample (the sampling
    # temperature); None = 1. Ratios compare them with the student's at that temperature.
    rollout_temperature: torch.Tensor | None = None
    # [B,T] float, for credit_baseline="group_mean": the baseline to subtract from C_t,
    # computed beforehand over the whole group (``group_credit_baseline``); None = from the
    # siblings in this batch (then group_ids is required).
    credit_baseline_values: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> LossBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return LossBatch(**{k: v.to(device) if v is not None else None for k, v in moved.items()})


def _check(
    name: str, t: torch.Tensor | None, shape: tuple[int | str, ...], kinds: tuple[torch.dtype, ...], what: str
):
    if not isinstance(t, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape {_fmt(shape)} ({what}), got {type(t).__name__}"
        )
    if t.dim() != len(shape) or any(
        isinstance(s, int) and s != d for s, d in zip(shape, t.shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {_fmt(shape)} ({what}), got {list(t.shape)}")
    if t.dtype not in kinds:
        raise ValueError(f"{name} must be {what}, got dtype {t.dtype}")


def _fmt(shape: tuple[int | str, ...]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def validate(
    batch: LossBatch,
    *,
    batch_size: int,
    length: int,
    vocab_size: int,
    needs_teacher: bool,
    needs_advantages: bool,
    needs_groups: bool,
    topk: int | None = None,
) -> None:
    """Raise ``ValueError`` on any inconsistency between the batch and the student's [B,T,V]."""
    B, T, V = batch_size, length, vocab_size
    _check("response_ids", batch.response_ids, (B, T), _INT, "an integer tensor [B,T] of token ids")
    _check("response_mask", batch.response_mask, (B, T), (torch.bool,), "a bool tensor [B,T]")
    mask = batch.response_mask
    ids = batch.response_ids[mask]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
        raise ValueError(
            f"response_ids has ids outside the vocabulary [0, {V}) at valid positions "
            f"(min {int(ids.min())}, max {int(ids.max())}); check the tokenizer matches the model"
        )
    if batch.teacher_mask is not None:
        _check("teacher_mask", batch.teacher_mask, (B,), (torch.bool,), "a bool tensor [B]")
    if batch.rollout_logprobs is not None:
        _check("rollout_logprobs", batch.rollout_logprobs, (B, T), _FLOAT, "a float tensor [B,T]")
        if not torch.isfinite(batch.rollout_logprobs[mask]).all():
            raise ValueError(
                "rollout_logprobs has NaN/inf at valid positions; the rollout engine's log-probs are broken"
            )
    if batch.rollout_temperature is not None:
        _check("rollout_temperature", batch.rollout_temperature, (B,), _FLOAT, "a float tensor [B]")
        if not (torch.isfinite(batch.rollout_temperature).all() and (batch.rollout_temperature > 0).all()):
            raise ValueError(
                "rollout_temperature must be finite and > 0: the temperature the rollout sampled at "
                "(1 for greedy sampling)"
            )
    if needs_advantages:
        if batch.advantages is None:
            raise ValueError(
                "advantages is required for this objective: a float tensor [B] (see group_advantages)"
            )
        _check("advantages", batch.advantages, (B,), _FLOAT, "a float tensor [B]")
        if not torch.isfinite(batch.advantages).all():
            raise ValueError("advantages has NaN/inf values")
    if batch.credit_baseline_values is not None:
        if not needs_groups:
            raise ValueError(
                "credit_baseline_values is set but the objective does not use credit_baseline='group_mean'"
            )
        _check("credit_baseline_values", batch.credit_baseline_values, (B, T), _FLOAT, "a float tensor [B,T]")
        if not torch.isfinite(batch.credit_baseline_values[mask]).all():
            raise ValueError("credit_baseline_values has NaN/inf at valid positions")
    elif needs_groups:
        if batch.group_ids is None:
            raise ValueError("group_ids is required for credit_baseline='group_mean': an integer tensor [B]")
        _check("group_ids", batch.group_ids, (B,), _INT, "an integer tensor [B]")
    if not needs_teacher:
        return
    if batch.teacher_topk_ids is None or batch.teacher_topk_logprobs is None:
        raise ValueError("teacher_topk_ids and teacher_topk_logprobs [B,T,K] are required for this objective")
    K = batch.teacher_topk_ids.shape[-1] if batch.teacher_topk_ids.dim() == 3 else "K"
    _check("teacher_topk_ids", batch.teacher_topk_ids, (B, T, K), _INT, "an integer tensor [B,T,K]")
    _check("teacher_topk_logprobs", batch.teacher_topk_logprobs, (B, T, K), _FLOAT, "a float tensor [B,T,K]")
    if topk is not None and K != topk:
        raise ValueError(f"teacher_topk_ids has K={K} but the student log-probs were gathered for K={topk}")
    if K > V:
        raise ValueError(f"teacher_topk_ids has K={K} > vocabulary size V={V}; K must be at most V")
    scored = mask if batch.teacher_mask is None else mask & batch.teacher_mask[:, None]
    t_ids = batch.teacher_topk_ids[scored]
    if t_ids.numel() and (int(t_ids.min()) < 0 or int(t_ids.max()) >= V):
        raise ValueError(
            f"teacher_topk_ids has ids outside the vocabulary [0, {V}) at scored positions; "
            "the teacher's tokenizer must match the student's"
        )
    t_lp = batch.teacher_topk_logprobs[scored].double()
    if not torch.isfinite(t_lp).all():
        raise ValueError(
            "teacher_topk_logprobs has NaN/inf at scored positions; mask those samples with teacher_mask"
        )
    if t_lp.numel():
        if float(t_lp.max()) > 1e-4:
            raise ValueError(
                f"teacher_topk_logprobs must be log-probabilities (<= 0), got max {float(t_lp.max()):.4g}"
            )
        mass = torch.logsumexp(t_lp, dim=-1).exp()
        if float(mass.max()) > 1.0 + 1e-2:
            raise ValueError(
                f"teacher_topk_logprobs sum to probability {float(mass.max()):.4f} > 1 at some position; "
                "they must be normalised over the full vocabulary (temperature applied before top-K)"
            )


def sanitize(batch: LossBatch) -> LossBatch:
    """Replace whatever sits at positions that never count (padding, samples without a
    teacher) with harmless finite values, so ``NaN * 0`` can never reach the loss."""
    mask = batch.response_mask
    scored = mask if batch.teacher_mask is None else mask & batch.teacher_mask[:, None]
    out = LossBatch(**batch.__dict__)
    if batch.teacher_topk_logprobs is not None:
        lp = batch.teacher_topk_logprobs
        uniform = torch.full_like(lp, -math.log(lp.shape[-1]))
        out.teacher_topk_logprobs = torch.where(scored[..., None], lp, uniform)
    if batch.credit_baseline_values is not None:
        base = batch.credit_baseline_values
        out.credit_baseline_values = torch.where(mask, base, torch.zeros_like(base))
    if batch.rollout_logprobs is not None:
        out.rollout_logprobs = torch.where(
            mask, batch.rollout_logprobs, torch.zeros_like(batch.rollout_logprobs)
        )
    return out
