import pytest

from tests.engine.conftest import vllm_tiny_dir  # noqa: F401  (shared session fixtures)
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module (reused, and left alone, if another module left one running)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}},
        )
    yield
    if started:
        ray.shutdown()
