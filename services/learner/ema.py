"""The EMA teacher: fp32 parameters updated once per step, phi <- (1 - r) phi + r theta."""

from __future__ import annotations

import torch

from services.learner.distributed import full_tensors, load_into


class EmaTeacher:
    """EMA of every parameter (full fine-tuning)."""

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
        return full_tensors(self.params)

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load unsharded tensors (from ``full_state_dict``) into this rank's layout."""
        missing = set(self.params) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for name, p in self.params.items():
            load_into(p, state[name])  # DTensor: keeps only this rank's shard

    # What the teacher engine loads, and what a checkpoint stores: the same full tensors.
    def weights(self) -> dict[str, torch.Tensor]:
        return self.full_state_dict()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.full_state_dict().items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_full_state_dict(state)


class LoraEmaTeacher:
    """EMA of the effective weight deltas (scale * B @ A) of a LoRA student's adapted modules.

    The frozen base weights are shared with the student; the teacher's weights are
    base + EMA(delta). Starts equal to the initial student (delta of the initial adapters).
    Under FSDP2 each delta is a DTensor sharded like its base weight (``delta_weights``), so
    ``weights`` and ``checkpoint_state`` are collectives: every rank must call them.
    """

    def __init__(self, model: torch.nn.Module, rate: float):
        from services.learner.lora import delta_weights

        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"teacher EMA rate must be in [0, 1], got {rate}")
        self.rate, self.model = rate, model
        self.deltas = delta_weights(model)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        from services.learner.lora import delta_weights

        if self.rate == 0.0:
            return
        for name, d in delta_weights(model).items():
            self.deltas[name].lerp_(d, self.rate)

    def weights(self) -> dict[str, torch.Tensor]:
        from services.learner.lora import effective_weights

        return effective_weights(self.model, self.deltas)

    full_state_dict = weights

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu().clone() for k, v in full_tensors(self.deltas).items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.deltas) - set(state)
        if missing:
            raise ValueError(f"LoRA EMA state is missing {len(missing)} modules, e.g. {sorted(missing)[:3]}")
        for name, d in self.deltas.items():
            load_into(d, state[name])  # DTensor: keeps only this rank's shard


def make_ema(model: torch.nn.Module, rate: float):
    """The EMA teacher that fits the student: over effective deltas for LoRA, else over all weights."""
    from services.learner.lora import lora_layers

    return LoraEmaTeacher(model, rate) if lora_layers(model) else EmaTeacher(model, rate)
