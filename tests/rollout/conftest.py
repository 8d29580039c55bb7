from tests.engine.conftest import smollm2_dir, tiny_model_dir, vllm_tiny_alt_dir, vllm_tiny_dir  # noqa: F401
