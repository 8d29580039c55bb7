"""The bus client against a real Redis: produce, consume, commit, dedup, backpressure, config."""

from __future__ import annotations

import os
import time

import pytest
import redis
from pydantic import ValidationError

from distil.bus import (
    BackpressureTimeout,
    Bus,
    BusConfig,
    BusUnavailable,
    EmbeddedRedis,
    EmbeddedRedisConfig,
    StepDone,
)
from tests.bus.bus_helpers import make_group, output_ids
from tests.conftest import fast_bus_config


def test_stage_passes_groups_on_and_acknowledges(bus: Bus, job_id: str) -> None:
    prod = bus.producer(job_id, "rollouts")
    for i in range(5):
        prod.publish(make_group(job_id, f"g{i}", feedback=False))
    stage = bus.consumer(job_id, "rollouts", "feedback", output="feedback")
    seen = []

    def handler(group):
        seen.append(group.group_id)
        for r in group.responses:
            r.text = r.text.upper()
        return group

    assert stage.run(handler, max_messages=5) == 5
    assert seen == [f"g{i}" for i in range(5)]
    assert output_ids(bus, job_id, "feedback") == seen
    # Committed input entries are acknowledged and deleted: nothing pending, nothing kept.
    assert bus.backlog(job_id, "rollouts") == 0
    assert bus.redis.xpending(bus.stream(job_id, "rollouts"), "feedback")["pending"] == 0
    sink = bus.consumer(job_id, "feedback", "teacher")
    got = sink.read(count=10)
    assert [d.group.responses[0].text for d in got] == [f"RESPONSE 0 OF G{i}" for i in range(5)]


@pytest.mark.parametrize("inline_max_bytes", [1 << 20, 0], ids=["inline", "beside"])
def test_duplicate_entries_are_processed_once(redis_url: str, job_id: str, inline_max_bytes: int) -> None:
    """A producer retry can append the same group twice; the consumer commits it once."""
    bus = Bus(fast_bus_config(redis_url, inline_max_bytes=inline_max_bytes))
    prod = bus.producer(job_id, "prompts")
    g = make_group(job_id, "dup", g=0)
    prod.publish(g)
    prod.publish(g)
    prod.publish(make_group(job_id, "other", g=0))
    stage = bus.consumer(job_id, "prompts", "rollout", output="rollouts")
    handled = []
    stage.run(lambda grp: handled.append(grp.group_id) or grp, max_messages=2)
    # The in-batch duplicate was dropped before the handler; a later duplicate too.
    prod.publish(g)
    assert stage.read(block_s=0.05) == []
    assert handled == ["dup", "other"]
    assert output_ids(bus, job_id, "rollouts") == ["dup", "other"]
    assert bus.backlog(job_id, "prompts") == 0
    assert not list(bus.redis.scan_iter(match=f"distil:{job_id}:prompts:blob:*"))
    bus.close()


def test_commit_is_idempotent_when_two_consumers_hold_the_same_entry(bus: Bus, job_id: str) -> None:
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "g"))
    a = bus.consumer(job_id, "rollouts", "feedback", name="a", output="feedback")
    b = bus.consumer(job_id, "rollouts", "feedback", name="b", output="feedback")
    (da,) = a.read()
    # a is slow; b claims the entry once it is idle (claim_idle_s=0.3 in tests).
    b_got = []
    deadline_reads = 0
    while not b_got and deadline_reads < 100:
        b_got = b.read(block_s=0.05)
        deadline_reads += 1
    (db,) = b_got
    assert db.attempt == 2 and db.message_id == da.message_id
    assert b.commit(db, db.group) is True
    assert a.commit(da, da.group) is False  # the late commit writes nothing
    assert output_ids(bus, job_id, "feedback") == ["g"]


def test_events_travel_with_their_own_ids(bus: Bus, job_id: str) -> None:
    ev = StepDone(job_id=job_id, step=1, policy_version=1, metrics={"loss": 2.0})
    bus.producer(job_id, "events").publish(ev)
    c = bus.consumer(job_id, "events", "gateway")
    (d,) = c.read()
    assert d.value == ev and d.message_id == ev.event_id
    assert c.ack([d]) == 1


def test_backpressure_waits_then_names_what_it_waited_for(redis_url: str, job_id: str) -> None:
    with Bus(fast_bus_config(redis_url, max_in_flight=3, backpressure_timeout_s=0.3)) as bus:
        prod = bus.producer(job_id, "prompts")
        for i in range(3):
            prod.publish(make_group(job_id, f"g{i}", g=0))
        with pytest.raises(BackpressureTimeout, match=rf"stream distil:{job_id}:prompts to drop below 3"):
            prod.publish(make_group(job_id, "g3", g=0))
        # Committing one makes room again.
        c = bus.consumer(job_id, "prompts", "rollout")
        c.ack(c.read(count=1))
        prod.publish(make_group(job_id, "g3", g=0))
        assert bus.backlog(job_id, "prompts") == 3


def test_stage_does_not_take_work_while_its_output_is_full(redis_url: str, job_id: str) -> None:
    with Bus(fast_bus_config(redis_url, max_in_flight=2, backpressure_timeout_s=0.3)) as bus:
        bus.producer(job_id, "prompts").publish_many([make_group(job_id, f"g{i}", g=0) for i in range(4)])
        stage = bus.consumer(job_id, "prompts", "rollout", output="rollouts")
        stage.run(lambda g: g, max_messages=2)
        with pytest.raises(BackpressureTimeout, match=rf"distil:{job_id}:rollouts"):
            stage.read()
        assert bus.backlog(job_id, "prompts") == 2  # the rest waits upstream, untouched


def test_unreachable_redis_raises_after_the_reconnect_deadline(job_id: str) -> None:
    cfg = BusConfig(url="redis://127.0.0.1:1/0", reconnect_timeout_s=0.3, connect_timeout_s=0.1)
    with Bus(cfg) as bus, pytest.raises(BusUnavailable, match="unreachable for 0s while reading the length"):
        bus.backlog(job_id, "prompts")


def test_embedded_redis_persists_across_restart(tmp_path) -> None:
    server = EmbeddedRedis(EmbeddedRedisConfig(dir=tmp_path))
    with server:
        r = redis.Redis.from_url(server.url)
        r.xadd("s", {"a": "1"})
        r.close()
    assert not server.running
    assert (tmp_path / "appendonly.aof").exists()
    with server:
        r = redis.Redis.from_url(server.url)
        assert r.xlen("s") == 1
        r.close()


def test_bus_without_url_starts_and_stops_embedded_redis(tmp_path, monkeypatch, job_id: str) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DISTIL_DATA_DIR", str(tmp_path))
    with Bus() as bus:
        assert bus.embedded is not None and bus.embedded.running
        assert bus.embedded.dir == tmp_path / "redis"
        assert os.environ["REDIS_URL"] == bus.url  # children (Ray workers) find the same server
        bus.producer(job_id, "prompts").publish(make_group(job_id, "g", g=0))
    assert not bus.embedded.running
    assert "REDIS_URL" not in os.environ  # no stale URL left for the next Bus()
    with Bus() as again:  # same data dir: the stream is still there (AOF)
        assert again.backlog(job_id, "prompts") == 1


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ValidationError, match="must exceed block_s"):
        BusConfig(block_s=5, socket_timeout_s=2)
    with pytest.raises(ValidationError):
        BusConfig(max_attempts=0)
    with pytest.raises(ValidationError):
        BusConfig(unknown=1)


def test_bad_names_are_refused(bus: Bus) -> None:
    with pytest.raises(ValueError, match="not a valid bus name"):
        bus.stream("job with spaces", "prompts")


def test_slow_handler_keeps_its_entry_claimed(redis_url: str, job_id: str) -> None:
    """run() heartbeats the entries it works on, so a handler slower than claim_idle_s is not
    mistaken for a dead consumer and its entry is not handed to another one."""
    import threading

    # Heartbeats every 0.2 s; only a stall of 0.4 s on this (shared) box could let a claim in.
    bus = Bus(fast_bus_config(redis_url, claim_idle_s=0.6))
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "slow"))
    worker = bus.consumer(job_id, "rollouts", "feedback", name="worker", output="feedback")
    other = bus.consumer(job_id, "rollouts", "feedback", name="other", output="feedback")
    started, release = threading.Event(), threading.Event()

    def handler(g):
        started.set()
        assert release.wait(30), "test never released the handler"
        return g

    t = threading.Thread(target=lambda: worker.run(handler, max_messages=1), daemon=True)
    t.start()
    assert started.wait(10)
    stolen = []
    idle_periods = 3  # keep trying to claim for several claim_idle_s periods
    deadline = time.monotonic() + idle_periods * bus.config.claim_idle_s
    while time.monotonic() < deadline:
        stolen += other.read(block_s=0.05)
    release.set()
    t.join(10)
    assert stolen == []
    assert output_ids(bus, job_id, "feedback") == ["slow"]
    bus.close()


def test_second_embedded_server_on_a_directory_attaches_instead_of_sharing_the_aof(tmp_path) -> None:
    first = EmbeddedRedis(EmbeddedRedisConfig(dir=tmp_path))
    second = EmbeddedRedis(EmbeddedRedisConfig(dir=tmp_path))
    with first:
        with second:
            assert second.attached and not second.running and second.url == first.url
        assert first.running  # the attached one did not stop the owner's server
        r = redis.Redis.from_url(first.url)
        assert r.ping()
        r.close()
    # Once the owner is gone, a new server starts on the same directory.
    with second:
        assert second.running and not second.attached


def test_invalid_handler_output_is_a_handler_failure_not_a_crash(bus: Bus, job_id: str) -> None:
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "g"))
    stage = bus.consumer(job_id, "rollouts", "feedback", output="feedback")

    def handler(g):
        g.responses[0].logprobs = g.responses[0].logprobs[:3]  # no longer matches token_ids
        return g

    deadline = time.monotonic() + 20
    stage.run(handler, stop=lambda: bool(bus.dead_letters(job_id, "rollouts")) or time.monotonic() > deadline)
    (letter,) = bus.dead_letters(job_id, "rollouts")
    assert (
        "handler returned an invalid message" in letter.reason
        and "16 token ids but 3 log-probs" in letter.reason
    )
    assert letter.attempts == bus.config.max_attempts
    assert bus.backlog(job_id, "feedback") == 0


def test_consumed_entries_are_trimmed_so_memory_stays_bounded(bus: Bus, job_id: str) -> None:
    key = bus.stream(job_id, "rollouts")
    prod = bus.producer(job_id, "rollouts")
    sink = bus.consumer(job_id, "rollouts", "feedback")
    sizes = []
    for round_ in range(3):
        prod.publish_many([make_group(job_id, f"r{round_}-{i}", t=64) for i in range(200)])
        assert bus.redis.memory_usage(key) > 100_000
        while batch := sink.read(count=100, block_s=0.01):
            sink.ack(batch)
        sizes.append(bus.redis.memory_usage(key))
    assert bus.backlog(job_id, "rollouts") == 0
    assert max(sizes) < 4096, sizes  # an empty stream, not 600 consumed entries
