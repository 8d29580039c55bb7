from tests.engine.conftest import vllm_tiny_dir  # noqa: F401  (shared session fixtures)
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401
