from tests.engine.conftest import smollm2_dir, vllm_tiny_dir  # noqa: F401  (shared session fixtures)
