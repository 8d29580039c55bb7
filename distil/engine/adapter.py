"""LoRA adapters as the learner publishes them and vLLM loads them: PEFT's saved layout.

A :class:`LoraAdapter` is what ``peft``'s ``save_pretrained`` writes, held in memory:
``tensors`` under PEFT's saved names (``base_model.model.<module>.lora_A.weight`` [r, in]
and ``.lora_B.weight`` [out, r]) and ``config``, the contents of ``adapter_config.json``
(``LoraConfig.to_dict()``). The engine writes it to a versioned directory and loads it
with a ``LoRARequest`` (the portable path: vLLM's CPU and CUDA builds both load adapters
from a PEFT directory). This module needs neither peft nor vLLM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_NAME = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter in PEFT's saved layout (see the module docstring)."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]

    @property
    def r(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def modules(self) -> list[str]:
        """The adapted modules (HF names, e.g. ``model.layers.0.self_attn.q_proj``)."""
        return sorted({m.group("module") for n in self.tensors if (m := _NAME.match(n))})


def model_weight_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of a Hugging Face model directory's weights, from the safetensors headers
    (no tensor is read). Empty when ``model_dir`` holds no safetensors files."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def check_adapter(
    adapter: LoraAdapter, max_rank: int, weight_shapes: dict[str, tuple[int, ...]] | None = None
) -> None:
    """Refuse an adapter the engine could not load or would load wrongly, saying what is wrong.

    Checks the layout (names, A/B pairs, ranks, finite values) and, given the base model's
    ``weight_shapes``, that every adapted module exists there with A [r, in] and B [out, r]
    fitting its [out, in] weight. Whether the weights are the learner's is the probe's job."""
    cfg = adapter.config
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in cfg:
            raise ValueError(f"LoRA adapter config lacks '{key}' (expected PEFT's LoraConfig.to_dict())")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"adapter config peft_type is {cfg.get('peft_type')!r}; only LORA adapters load")
    if adapter.r > max_rank:
        raise ValueError(
            f"adapter rank r={adapter.r} exceeds the engine's lora.max_rank={max_rank}; "
            f"start the engine with lora.max_rank >= {adapter.r}"
        )
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError("per-module rank_pattern/alpha_pattern adapters are not supported here")
    if not adapter.tensors:
        raise ValueError("LoRA adapter carries no tensors")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in adapter.tensors.items():
        m = _NAME.match(name)
        if m is None:
            raise ValueError(
                f"LoRA adapter tensor {name!r} is not named like PEFT's saved adapters "
                "('base_model.model.<module>.lora_A.weight' / '.lora_B.weight'); only LoRA A/B "
                "matrices are published (no modules_to_save, biases or embeddings)"
            )
        if t.dim() != 2:
            raise ValueError(f"LoRA adapter tensor {name} has shape {tuple(t.shape)}; expected a matrix")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"LoRA adapter tensor {name} holds NaN or inf values")
        pairs.setdefault(m.group("module"), {})[m.group("ab")] = t
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ValueError(f"LoRA adapter has lora_{''.join(ab)} but not both A and B for {module}")
        a, b = ab["A"], ab["B"]
        if a.shape[0] != adapter.r or b.shape[1] != adapter.r:
            raise ValueError(
                f"LoRA adapter {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not "
                f"have rank r={adapter.r} (A must be [r, in], B [out, r])"
            )
        if weight_shapes:
            base = weight_shapes.get(f"{module}.weight")
            if base is None or len(base) != 2:
                raise ValueError(f"LoRA adapter adapts {module}, which the engine's model does not have")
            if (b.shape[0], a.shape[1]) != base:
                raise ValueError(
                    f"LoRA adapter {module}: lora_B @ lora_A is [{b.shape[0]}, {a.shape[1]}] but the "
                    f"model's weight is {list(base)} (an adapter for another model?)"
                )


def write_peft_dir(adapter: LoraAdapter, path: Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``adapter`` as PEFT's ``save_pretrained`` would (``adapter_config.json`` +
    ``adapter_model.safetensors``), tensors cast to ``dtype`` (the engine's) when given."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().to("cpu", dtype or t.dtype).contiguous() for n, t in adapter.tensors.items()}
    save_file(tensors, str(path / WEIGHTS_FILE))
    # Written last: a directory with a config is complete.
    (path / CONFIG_FILE).write_text(json.dumps(adapter.config, default=sorted, indent=1))
    return path
