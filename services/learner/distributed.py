"""FSDP2 for the learner: ``fully_shard`` per transformer block, then the root.

One process per rank; ``torch.distributed`` with NCCL on GPU, gloo on CPU. Every rank
receives the whole mini-batch and trains on its deterministic share (``rank_share``), so
the normaliser of the token-mean is global without any extra communication.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(rank: int, world_size: int, *, master_port: int, timeout_s: float = 120.0) -> Topology:
    """Join the process group (gloo on CPU, NCCL when CUDA is available)."""
    from datetime import timedelta

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(master_port)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return Topology(rank, world_size)


def transformer_blocks(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers`` for Llama-likes)."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(
            f"cannot find transformer blocks in {type(model).__name__}: expected .get_decoder().layers"
        )
    return list(layers)


def shard_policy(policy: torch.nn.Module, *, param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Apply FSDP2 to the learner's policy in place: each block, then the root.

    Compute in ``param_dtype`` over fp32 master weights, gradients reduced in fp32 (None or
    float32: plain fp32). The caller resolves it (``distil.hardware.learner_dtype``).
    """
    low = param_dtype not in (None, torch.float32)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if low else None
    kwargs = {"mp_policy": mp} if mp is not None else {}
    for block in transformer_blocks(policy.model):
        fully_shard(block, **kwargs)
    fully_shard(policy, **kwargs)
    return policy


def rank_share(items: Sequence, topo: Topology) -> list:
    """This rank's share of the (length-sorted) mini-batch: every world_size-th item."""
    return list(items[topo.rank :: topo.world_size])


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` unsharded: gathered if it is a DTensor (a collective: every rank must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor unsharded, in ``tensors``' order (the same on every rank: collectives)."""
    return {name: full_tensor(t) for name, t in tensors.items()}


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded parameters (a collective under FSDP2: every rank must call it)."""
    return full_tensors({name: p.detach() for name, p in model.named_parameters()})


def load_into(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy the unsharded ``full`` into ``dst``, keeping only this rank's shard if ``dst`` is a
    DTensor (then a collective: every rank must call it)."""
    if hasattr(dst, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(dst.dtype), dst.device_mesh, dst.placements)
    with torch.no_grad():
        dst.copy_(full)
