"""LoRA through peft, and the effective weights a LoRA student and its EMA teacher stand for.

Defaults are the paper's Table 6 (r=64, alpha=128, all attention and MLP projections).
The EMA teacher of a LoRA student averages the *effective* weight deltas (scale * B @ A),
not A and B separately: EMA(B) @ EMA(A) != EMA(B @ A).

What the engines receive: the student as its adapter (``peft_adapter``: A/B + config, what
the rollout engine loads as a vLLM LoRA adapter), the EMA teacher as merged full weights
(``effective_weights`` with the EMA deltas). base + EMA(delta) is not a rank-r adapter:
every step adds up to r to the rank of the average, so no fixed-rank adapter carries it
exactly, and a truncated one would be a different teacher (see docs/learner.md).

Under FSDP2 (LoRA applied before ``fully_shard``) the A/B matrices and the base weights are
sharded DTensors: deltas stay sharded like their base weight, and what leaves the learner
(``effective_weights``, ``peft_adapter``) is gathered to full tensors, a collective that
every rank must join.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from distil.engine.adapter import LoraAdapter
from services.learner.distributed import full_tensor, full_tensors

TABLE6_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "default"


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=64, ge=1)
    alpha: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = TABLE6_TARGETS


def apply_lora(model: torch.nn.Module, settings: LoraSettings):
    """Wrap ``model`` with peft LoRA adapters. Returns ``(peft_model, inner)``: ``inner`` is the
    original causal-LM class with LoRA layers injected (what the learner's policy wraps)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )
    peft_model = get_peft_model(model, cfg)
    return peft_model, peft_model.base_model.model


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module name -> peft LoRA layer, for every adapted module of ``model``."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def delta_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Effective weight delta (scale * B @ A) of every adapted module, fp32, detached.

    Under FSDP2 each is a DTensor laid out like its base weight (a collective)."""
    out = {}
    with torch.no_grad():
        for name, m in lora_layers(model).items():
            delta = m.get_delta_weight(ADAPTER).detach().float()
            base = m.get_base_layer().weight
            if hasattr(delta, "redistribute"):  # B @ A of two shards: place it as the base is
                delta = delta.redistribute(base.device_mesh, base.placements)
            out[name] = delta
    return out


def effective_weights(
    model: torch.nn.Module, deltas: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Hugging Face-named full weights: base + delta for adapted modules (``deltas`` default to
    the current adapters'), other parameters as they are. What an engine loads; unsharded
    (a collective under FSDP2: every rank must call it)."""
    layers = lora_layers(model)
    deltas = delta_weights(model) if deltas is None else deltas
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                continue
            module, _, leaf = name.rpartition(".")
            if module.endswith(".base_layer") and module[: -len(".base_layer")] in layers:
                owner = module[: -len(".base_layer")]
                if leaf == "weight":
                    out[f"{owner}.weight"] = full_tensor(p.detach().float() + deltas[owner].to(p.device))
                else:
                    out[f"{owner}.{leaf}"] = full_tensor(p.detach().float())
            else:
                out[name] = full_tensor(p.detach().float())
    return out


def peft_adapter(model: torch.nn.Module) -> LoraAdapter:
    """The adapters of a peft-injected ``model`` as ``save_pretrained`` writes them: A/B
    tensors (fp32, detached, unsharded copies) under PEFT's saved names and the ``LoraConfig``
    (a collective under FSDP2: every rank must call it)."""
    from peft import get_peft_model_state_dict

    config = model.peft_config[ADAPTER].to_dict()
    if isinstance(config["target_modules"], (set, frozenset)):  # JSON needs a list
        config["target_modules"] = sorted(config["target_modules"])
    with torch.no_grad():
        state = full_tensors(get_peft_model_state_dict(model, adapter_name=ADAPTER))
        tensors = {f"base_model.model.{k}": v.detach().float().clone() for k, v in state.items()}
    return LoraAdapter(tensors=tensors, config=config)
