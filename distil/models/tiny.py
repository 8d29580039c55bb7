"""Tiny random Llama models with a real tokenizer, for fast tests of engines and learners."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock


def make_tiny_model(
    target: Path,
    *,
    tokenizer_from: Path,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random ``LlamaForCausalLM`` with ``tokenizer_from``'s tokenizer and vocabulary
    to ``target`` (idempotent). Loads in transformers and vLLM in seconds."""
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=300):
        if (target / "model.safetensors").is_file():
            return target
        import torch
        from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        base = AutoConfig.from_pretrained(tokenizer_from)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        config = LlamaConfig(
            vocab_size=base.vocab_size,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=getattr(base, "max_position_embeddings", 2048),
            bos_token_id=base.bos_token_id,
            eos_token_id=base.eos_token_id,
            pad_token_id=getattr(base, "pad_token_id", None),
            tie_word_embeddings=True,
            rope_theta=getattr(base, "rope_theta", 10000.0),
            dtype="float32",
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        tmp = target.with_name(target.name + ".tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return target
