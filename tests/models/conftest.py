from __future__ import annotations

import pytest

from distil.models import make_tiny_model, resolve_model


@pytest.fixture(scope="session")
def smollm2_dir():
    """The packaged SmolLM2-135M-Instruct as a Hugging Face directory (converted once per data dir)."""
    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir):
    return make_tiny_model(smollm2_dir.parent / "tiny-llama-2x64", tokenizer_from=smollm2_dir)
