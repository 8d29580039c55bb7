from __future__ import annotations

import pytest

from distil.models import make_tiny_model
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401  (shared session fixtures)


@pytest.fixture(scope="session")
def vllm_tiny_dir(smollm2_dir):  # noqa: F811
    """A tiny random Llama whose head size (32) vLLM's CPU attention supports (the shared
    tiny model's 16 is not)."""
    return make_tiny_model(
        smollm2_dir.parent / "tiny-llama-vllm", tokenizer_from=smollm2_dir, heads=2, kv_heads=1
    )


@pytest.fixture(scope="session")
def vllm_tiny_alt_dir(smollm2_dir):  # noqa: F811
    """Same architecture as ``vllm_tiny_dir``, other random weights: a 'new policy version'."""
    return make_tiny_model(
        smollm2_dir.parent / "tiny-llama-vllm-seed1", tokenizer_from=smollm2_dir, heads=2, kv_heads=1, seed=1
    )
