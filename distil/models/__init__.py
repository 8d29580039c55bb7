"""Model resolution: local Hugging Face directories, hub ids, the packaged SmolLM2-135M-Instruct,
and tiny random models with the same tokenizer for fast tests."""

from distil.models.resolve import PACKAGED_MODELS, resolve_model
from distil.models.tiny import make_tiny_model

__all__ = ["PACKAGED_MODELS", "make_tiny_model", "resolve_model"]
