"""Turn scored samples into padded model inputs and ``LossBatch``es, packed by a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distil.losses import LossBatch


@dataclass
class TrainSample:
    """One response of a scored group, as the learner trains on it."""

    prompt_ids: np.ndarray  # [P] int
    response_ids: np.ndarray  # [T] int
    rollout_logprobs: np.ndarray | None = None  # [T] float
    teacher_topk_ids: np.ndarray | None = None  # [T,K] int
    teacher_topk_logprobs: np.ndarray | None = None  # [T,K] float
    teacher_mask: bool = True
    advantage: float = 0.0
    group_id: int = 0
    rollout_temperature: float = 1.0  # temperature of rollout_logprobs' distribution
    # [T] float, credit_baseline="group_mean": the leave-one-out sibling credit per position,
    # computed by the learner over the whole group before micro-batching (Learner.step).
    credit_baseline: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class ModelBatch:
    input_ids: torch.Tensor  # [B,L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B,L]
    predict_positions: torch.Tensor  # [B,T] index of the position whose output predicts y_t
    loss_batch: LossBatch

    def to(self, device: torch.device | str) -> ModelBatch:
        return ModelBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.predict_positions.to(device),
            self.loss_batch.to(device),
        )


def micro_batches(samples: Sequence[TrainSample], token_budget: int) -> list[list[TrainSample]]:
    """Pack samples, longest first, so that rows x longest row <= token_budget per micro-batch.

    A sample longer than the budget gets a micro-batch of its own (never dropped).
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    ordered = sorted(samples, key=lambda s: s.length, reverse=True)
    batches: list[list[TrainSample]] = []
    current: list[TrainSample] = []
    for s in ordered:
        longest = current[0].length if current else s.length
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(s)
    if current:
        batches.append(current)
    return batches


def whole_group_batches(samples: Sequence[TrainSample], token_budget: int) -> list[list[TrainSample]] | None:
    """Micro-batches that each hold whole groups (rows x longest row <= token_budget), or
    None when some group alone exceeds the budget.

    With every sibling in its micro-batch, an in-batch leave-one-out credit baseline is the
    whole-group one, so the learner can skip its no-grad pre-pass over the step. Groups go
    longest first into the first micro-batch they fit (first-fit decreasing)."""
    groups: dict[int, list[TrainSample]] = {}
    for s in samples:
        groups.setdefault(s.group_id, []).append(s)
    if any(len(g) * max(s.length for s in g) > token_budget for g in groups.values()):
        return None
    batches: list[list[TrainSample]] = []
    for g in sorted(groups.values(), key=lambda g: max(s.length for s in g), reverse=True):
        for b in batches:
            if (len(b) + len(g)) * max(s.length for s in b + g) <= token_budget:
                b.extend(g)
                break
        else:
            batches.append(list(g))
    return batches


def collate(samples: Sequence[TrainSample], pad_id: int) -> ModelBatch:
    """Right-padded ``prompt + response`` inputs and the loss tensors aligned on response tokens."""
    B = len(samples)
    L = max(s.length for s in samples)
    T = max(max(len(s.response_ids) for s in samples), 1)
    ks = {s.teacher_topk_ids.shape[-1] for s in samples if s.teacher_topk_ids is not None}
    if len(ks) > 1:
        raise ValueError(
            f"samples of one batch carry different teacher top-K sizes {sorted(ks)}; use one K per job"
        )
    K = ks.pop() if ks else 0
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention = torch.zeros(B, L, dtype=torch.long)
    positions = torch.zeros(B, T, dtype=torch.long)
    resp = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    roll = torch.zeros(B, T, dtype=torch.float32)
    t_ids = torch.zeros(B, T, max(K, 1), dtype=torch.long)
    t_lp = torch.full((B, T, max(K, 1)), -1.0, dtype=torch.float32)
    t_mask = torch.zeros(B, dtype=torch.bool)
    for b, s in enumerate(samples):
        P, n = len(s.prompt_ids), len(s.response_ids)
        if P == 0:
            raise ValueError(
                "a sample has an empty prompt: the first response token needs a position to predict it"
            )
        input_ids[b, :P] = torch.tensor(s.prompt_ids, dtype=torch.long)
        input_ids[b, P : P + n] = torch.tensor(s.response_ids, dtype=torch.long)
        attention[b, : P + n] = 1
        positions[b, :n] = torch.arange(P - 1, P + n - 1)
        resp[b, :n] = input_ids[b, P : P + n]
        mask[b, :n] = True
        if s.rollout_logprobs is not None:
            roll[b, :n] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
        if s.teacher_topk_ids is not None and s.teacher_mask:
            t_ids[b, :n] = torch.tensor(s.teacher_topk_ids, dtype=torch.long)
            t_lp[b, :n] = torch.tensor(s.teacher_topk_logprobs, dtype=torch.float32)
            t_mask[b] = True
    has_rollout = all(s.rollout_logprobs is not None for s in samples)
    has_baseline = [s.credit_baseline is not None for s in samples]
    if any(has_baseline) and not all(has_baseline):
        raise ValueError("some samples of a batch carry a credit baseline and some do not")
    baseline = None
    if all(has_baseline):
        baseline = torch.zeros(B, T, dtype=torch.float32)
        for b, s in enumerate(samples):
            baseline[b, : len(s.response_ids)] = torch.as_tensor(s.credit_baseline, dtype=torch.float32)
    temps = [s.rollout_temperature for s in samples]
    loss_batch = LossBatch(
        response_ids=resp,
        response_mask=mask,
        teacher_topk_ids=t_ids if K else None,
        teacher_topk_logprobs=t_lp if K else None,
        rollout_logprobs=roll if has_rollout else None,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        # always set: all False (K = 0) says no sample has a teacher signal, so a distillation
        # objective gives this micro-batch zero weight instead of asking for a teacher
        teacher_mask=t_mask,
        group_ids=torch.tensor([s.group_id for s in samples], dtype=torch.long),
        # only when some sample was sampled at a temperature other than 1 (costs one more
        # log-softmax per chunk in the learner)
        rollout_temperature=(
            torch.tensor(temps, dtype=torch.float32) if has_rollout and any(t != 1.0 for t in temps) else None
        ),
        credit_baseline_values=baseline,
    )
    return ModelBatch(input_ids, attention, positions, loss_batch)
