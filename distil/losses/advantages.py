"""Group-normalised advantages (GRPO) from per-sample rewards."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, std_normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """A_i = (r_i - mean_group r) / (std_group r + eps); without ``std_normalize`` no division.

    The std is the unbiased sample std over the group (as in the reference GRPO code); a
    group of one or with equal rewards gets advantage 0.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both have shape [B], got {list(rewards.shape)} and {list(group_ids.shape)}"
        )
    r = rewards.double()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = torch.zeros(int(inverse.max()) + 1 if len(r) else 0, dtype=r.dtype).index_add_(
        0, inverse, torch.ones_like(r)
    )
    mean = torch.zeros_like(n).index_add_(0, inverse, r) / n
    centered = r - mean[inverse]
    if not std_normalize:
        return centered.to(rewards.dtype if rewards.is_floating_point() else torch.float32)
    var = torch.zeros_like(n).index_add_(0, inverse, centered**2) / (n - 1).clamp(min=1)
    adv = centered / (var.sqrt()[inverse] + eps)
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)
