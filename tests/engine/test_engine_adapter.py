"""LoRA adapters in PEFT's saved layout (no engine): what the learner exports loads in peft
exactly, and malformed adapters are refused saying what is wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import torch

from distil.engine.adapter import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoraAdapter,
    check_adapter,
    model_weight_shapes,
    write_peft_dir,
)
from services.learner.lora import LoraSettings, apply_lora, peft_adapter

IDS = torch.tensor([[1, 504, 3458, 282, 260, 2000, 17]])


def trained_lora(model_dir, seed: int = 0, r: int = 4):
    """A peft LoRA model on ``model_dir`` whose adapters are non-trivial (B != 0)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _, model = apply_lora(base, LoraSettings(r=r, alpha=2 * r))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def test_exported_adapter_loads_in_peft_and_reproduces_the_model(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = trained_lora(tiny_model_dir)
    adapter = peft_adapter(model)
    layers = model.config.num_hidden_layers
    assert len(adapter.tensors) == 2 * 7 * layers  # A and B of every projection of every layer
    assert adapter.r == 4 and adapter.alpha == 8
    assert all(n.startswith("base_model.model.") for n in adapter.tensors)
    check_adapter(adapter, max_rank=8)

    path = write_peft_dir(adapter, tmp_path / "v1")
    assert {p.name for p in path.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE}
    assert json.loads((path / CONFIG_FILE).read_text())["r"] == 4
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=1e-5, atol=1e-5)


def test_export_is_a_copy(tiny_model_dir):
    model = trained_lora(tiny_model_dir)
    adapter = peft_adapter(model)
    name = next(n for n in adapter.tensors if ".lora_B." in n)
    before = adapter.tensors[name].clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.testing.assert_close(adapter.tensors[name], before)


@pytest.fixture(scope="module")
def good(tiny_model_dir) -> LoraAdapter:
    return peft_adapter(trained_lora(tiny_model_dir))


def _without(adapter: LoraAdapter, pred) -> LoraAdapter:
    return dataclasses.replace(adapter, tensors={n: t for n, t in adapter.tensors.items() if not pred(n)})


def test_rank_above_the_engines_max_is_refused(good):
    with pytest.raises(ValueError, match=r"r=4 exceeds the engine's lora.max_rank=1"):
        check_adapter(good, max_rank=1)


def test_malformed_adapters_are_refused(good):
    with pytest.raises(ValueError, match="not both A and B"):
        check_adapter(_without(good, lambda n: n.endswith("q_proj.lora_B.weight")), 8)
    bad = dict(good.tensors)
    bad["base_model.model.lm_head.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="not named like PEFT's saved adapters"):
        check_adapter(dataclasses.replace(good, tensors=bad), 8)
    name = next(n for n in good.tensors if n.endswith("lora_A.weight"))
    nan = dict(good.tensors) | {name: torch.full_like(good.tensors[name], float("nan"))}
    with pytest.raises(ValueError, match="NaN or inf"):
        check_adapter(dataclasses.replace(good, tensors=nan), 8)
    wrong_rank = dict(good.tensors) | {name: good.tensors[name][:2]}
    with pytest.raises(ValueError, match="do not have rank r=4"):
        check_adapter(dataclasses.replace(good, tensors=wrong_rank), 8)
    with pytest.raises(ValueError, match="lacks 'lora_alpha'"):
        check_adapter(dataclasses.replace(good, config={"r": 4, "target_modules": ["q_proj"]}), 8)
    with pytest.raises(ValueError, match="no tensors"):
        check_adapter(dataclasses.replace(good, tensors={}), 8)


def test_an_engine_without_lora_refuses_adapters_and_a_lora_engine_full_weights(good):
    from types import SimpleNamespace

    from distil.engine import EngineConfig, EngineError
    from distil.engine.config import EngineLoraConfig
    from distil.engine.engine import Engine

    plain = SimpleNamespace(config=EngineConfig(model="m"))
    with pytest.raises(EngineError, match=r"adapter version 1 sent to an engine started without LoRA"):
        asyncio.run(Engine.update_adapter(plain, good, 1))
    lora = SimpleNamespace(config=EngineConfig(model="m", lora=EngineLoraConfig()))
    with pytest.raises(EngineError, match=r"full weights version 1 sent to an engine that serves LoRA"):
        asyncio.run(Engine.update_weights(lora, {}, 1))


def test_adapters_are_checked_against_the_models_weight_shapes(good, tiny_model_dir):
    shapes = model_weight_shapes(tiny_model_dir)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (64, 64)
    check_adapter(good, 8, shapes)
    moved = {n.replace("layers.1.", "layers.7."): t for n, t in good.tensors.items()}
    with pytest.raises(
        ValueError, match=r"adapts model.layers.7.\S+, which the engine's model does not have"
    ):
        check_adapter(dataclasses.replace(good, tensors=moved), 8, shapes)
    name = next(n for n in good.tensors if n.endswith("mlp.down_proj.lora_A.weight"))
    wide = dict(good.tensors) | {name: torch.zeros(4, 64)}  # down_proj's input is the MLP width, 128
    with pytest.raises(
        ValueError, match=r"down_proj: lora_B @ lora_A is \[64, 64\] but the model's weight is \[64, 128\]"
    ):
        check_adapter(dataclasses.replace(good, tensors=wide), 8, shapes)
