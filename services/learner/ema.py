"""The EMA teacher: fp32 parameters updated once per step, phi <- (1 - r) phi + r theta."""

from __future__ import annotations

import torch


class EmaTeacher:
    """Starts equal to the initial student; ``rate`` 0 keeps the initial weights (frozen teacher)."""

    def __init__(self, model: torch.nn.Module, rate: float):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"teacher EMA rate must be in [0, 1], got {rate}")
        self.rate = rate
        # Same layout as the student's parameters: sharded DTensors under FSDP2, plain tensors otherwise.
        self.params = {n: p.detach().to(torch.float32).clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self.rate == 0.0:
            return
        for name, p in model.named_parameters():
            self.params[name].lerp_(p.detach().to(torch.float32), self.rate)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Unsharded fp32 tensors (a collective under FSDP2: call on every rank)."""
        return {n: p.full_tensor() if hasattr(p, "full_tensor") else p for n, p in self.params.items()}

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load unsharded tensors (from ``full_state_dict``) into this rank's layout."""
        missing = set(self.params) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for name, p in self.params.items():
            full = state[name].to(torch.float32)
            if hasattr(p, "device_mesh"):  # DTensor: keep only this rank's shard
                from torch.distributed.tensor import distribute_tensor

                p.copy_(distribute_tensor(full, p.device_mesh, p.placements))
            else:
                p.copy_(full)
