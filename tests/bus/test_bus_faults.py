"""Faults and bad input, all against a real Redis server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distil.bus import Bus, Group, decode_group, encode_group
from distil.bus._pb import group_pb2
from distil.bus.envelope import to_fields
from tests.bus.bus_helpers import make_group, output_ids, wait_until
from tests.conftest import fast_bus_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["inline", "beside"])
def inline_max_bytes(request) -> int:
    """Every fault test runs with payloads inline in entries and stored beside them."""
    return 1 << 20 if request.param == "inline" else 0


@pytest.fixture
def bus(redis_url: str, inline_max_bytes: int):
    with Bus(fast_bus_config(redis_url, inline_max_bytes=inline_max_bytes)) as b:
        yield b


def payload_strings(bus: Bus, job: str, stream: str = "*") -> set[str]:
    return {k.decode() for k in bus.redis.scan_iter(match=f"distil:{job}:{stream}:blob:*")}


def drain(stage, until, timeout_s: float, handler=lambda g: g) -> list:
    """Read/handle/commit until ``until()`` holds; returns the deliveries handled."""
    handled = []
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "pipeline stopped making progress"
        for d in stage.read():
            handled.append(d)
            stage.commit(d, handler(d.value))
    return handled


def test_sigkilled_consumer_entries_are_redelivered_and_seen_exactly_once(bus: Bus, job_id: str) -> None:
    n = 12
    bus.producer(job_id, "rollouts").publish_many([make_group(job_id, f"g{i:02d}") for i in range(n)])
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.bus.consumer_worker", bus.url, job_id],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        wait_until(
            lambda: bus.redis.get(f"{job_id}:worker-stuck") is not None, 60, "the worker to hang mid-batch"
        )
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
    key = bus.stream(job_id, "rollouts")
    assert bus.redis.xpending(key, "feedback")["pending"] == 5  # delivered to the dead worker, uncommitted

    survivor = bus.consumer(job_id, "rollouts", "feedback", name="survivor", output="feedback")
    handled = drain(survivor, lambda: bus.backlog(job_id, "rollouts") == 0, timeout_s=30)
    redelivered = [d for d in handled if d.attempt == 2]
    assert len(redelivered) == 5  # the dead worker's in-flight entries, claimed after claim_idle_s
    assert len(handled) == n - 3, [(d.message_id, d.attempt, d.entry_id) for d in handled]

    # Downstream sees every group exactly once.
    sink = bus.consumer(job_id, "feedback", "teacher")
    seen = [d.group.group_id for d in drain_all(sink)]
    assert sorted(seen) == [f"g{i:02d}" for i in range(n)]
    assert bus.redis.xpending(key, "feedback")["pending"] == 0
    assert payload_strings(bus, job_id) == set()


def drain_all(consumer) -> list:
    out = []
    while batch := consumer.read(count=64, block_s=0.1):
        out += batch
        consumer.ack(batch)
    return out


class _Thread(threading.Thread):
    """A thread that keeps the exception that ended it, for the test to re-raise."""

    def __init__(self, target, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _no_errors(threads: list[_Thread]) -> bool:
    for t in threads:
        assert t.error is None, f"{t.name} died: {t.error!r}"
    return True


def test_redis_restart_loses_nothing_acknowledged_and_duplicates_nothing(
    restartable_redis, job_id: str, inline_max_bytes: int
) -> None:
    n = 60
    # A small in-flight bound throttles the producer to the pipeline's pace, so it is still
    # publishing when Redis dies; nothing consumes "results", so the sink may fill it.
    cfg = fast_bus_config(
        restartable_redis.url, reconnect_timeout_s=30.0, max_in_flight=4, inline_max_bytes=inline_max_bytes
    )
    sink_cfg = cfg.model_copy(update={"max_in_flight": 2 * n})
    stop = threading.Event()
    published: list[str] = []
    buses = [Bus(cfg), Bus(cfg), Bus(sink_cfg)]
    producer_bus, stage_bus, sink_bus = buses

    def produce() -> None:
        prod = producer_bus.producer(job_id, "prompts")
        for i in range(n):
            g = make_group(job_id, f"g{i:03d}", g=2, t=32)
            prod.publish(g)
            published.append(g.group_id)  # publish returned: Redis acknowledged the write

    def stage() -> None:  # prompts -> rollouts
        stage_bus.consumer(job_id, "prompts", "rollout", output="rollouts").run(lambda g: g, stop=stop)

    sink_calls = []
    held, restarted = threading.Event(), threading.Event()

    def sink_handler(g: Group) -> Group:
        sink_calls.append(g.group_id)
        if len(sink_calls) == 16:  # hold the pipeline mid-handler until Redis has been restarted
            held.set()
            assert restarted.wait(60), "Redis was not restarted"
        return g

    def sink() -> None:  # rollouts -> results: the downstream effect, committed atomically with the ack
        sink_bus.consumer(job_id, "rollouts", "learner", output="results").run(sink_handler, stop=stop)

    threads = [_Thread(produce, "producer"), _Thread(stage, "stage"), _Thread(sink, "sink")]
    for t in threads:
        t.start()
    observer = Bus(sink_cfg)
    try:
        wait_until(held.is_set, 60, "15 groups through the pipeline and the 16th in the sink's handler")
        # Backpressure now holds the producer mid-run (prompts and rollouts are full).
        wait_until(
            lambda: observer.backlog(job_id, "prompts") >= 4, 30, "the producer to block on backpressure"
        )
        assert threads[0].is_alive() and observer.backlog(job_id, "results") == 15
        restartable_redis.kill()  # SIGKILL: no chance to flush anything beyond the fsynced AOF
        restartable_redis.start()  # same port, same AOF
        restarted.set()
        wait_until(
            lambda: (
                _no_errors(threads) and observer.backlog(job_id, "results") >= n and not threads[0].is_alive()
            ),
            60,
            f"all {n} groups to reach the results stream after the restart",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    for t in threads:
        assert t.error is None, f"{t.name} died: {t.error!r}"
    assert published == [f"g{i:03d}" for i in range(n)]
    results = output_ids(observer, job_id, "results")
    assert len(results) == len(set(results)) == n, "a group was lost or processed twice"
    assert set(results) == set(published)
    assert observer.backlog(job_id, "prompts") == 0 and observer.backlog(job_id, "rollouts") == 0
    # Payload strings exist only for entries still in a stream (here: results, never consumed).
    results = observer.redis.xrange(observer.stream(job_id, "results"))
    assert payload_strings(observer, job_id) == {f[b"b"].decode() for _, f in results if b"b" in f}
    for b in (*buses, observer):
        b.close()


def test_poison_entry_is_dead_lettered_after_max_attempts_and_the_rest_flows(bus: Bus, job_id: str) -> None:
    bus.producer(job_id, "rollouts").publish_many([make_group(job_id, f"g{i}") for i in range(6)])
    stage = bus.consumer(job_id, "rollouts", "feedback", output="feedback")
    calls: dict[str, int] = {}

    def handler(g: Group) -> Group:
        calls[g.group_id] = calls.get(g.group_id, 0) + 1
        if g.group_id == "g2":
            raise ValueError("poison pill g2: verifier crashed")
        return g

    deadline = time.monotonic() + 30
    stage.run(
        handler,
        stop=lambda: bool(bus.dead_letters(job_id, "rollouts")) or time.monotonic() > deadline,
    )
    (letter,) = bus.dead_letters(job_id, "rollouts")
    assert letter.message_id == "g2" and letter.attempts == 3
    assert "handler failed on attempt 3/3: ValueError: poison pill g2: verifier crashed" in letter.reason
    assert decode_group(letter.payload).group_id == "g2"  # the payload is kept for inspection / replay
    assert calls["g2"] == 3
    assert output_ids(bus, job_id, "feedback") == ["g0", "g1", "g3", "g4", "g5"]
    assert bus.backlog(job_id, "rollouts") == 0  # nothing left blocking the stream
    assert payload_strings(bus, job_id, "rollouts") == set()

    # Entries keep flowing after the dead letter.
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "g6"))
    stage.run(handler, max_messages=1)
    assert output_ids(bus, job_id, "feedback")[-1] == "g6"


def test_entry_that_keeps_killing_its_consumer_is_dead_lettered(bus: Bus, job_id: str) -> None:
    """Consumers that die without a word (no fail() call) still cannot crash-loop on an entry."""
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "killer"))
    crashers = [bus.consumer(job_id, "rollouts", "feedback", name=f"crash{i}") for i in range(3)]
    (first,) = crashers[0].read(count=1)  # delivery 1; the consumer then "dies"
    assert first.message_id == "killer"
    for c in crashers[1:]:  # deliveries 2 and 3, each claimed from a dead consumer
        wait_until(
            lambda c=c: [d.message_id for d in c.read(block_s=0.05)] == ["killer"], 10, f"{c.name} to claim"
        )
    bus.producer(job_id, "rollouts").publish(make_group(job_id, "fine"))
    survivor = bus.consumer(job_id, "rollouts", "feedback", name="survivor", output="feedback")
    handled = drain(survivor, lambda: bus.backlog(job_id, "rollouts") == 0, timeout_s=20)
    assert [d.message_id for d in handled] == ["fine"]
    (letter,) = bus.dead_letters(job_id, "rollouts")
    assert letter.message_id == "killer" and letter.attempts == 3
    assert "gave up after 3 deliveries without a commit" in letter.reason
    assert decode_group(letter.payload).group_id == "killer"
    assert payload_strings(bus, job_id, "rollouts") == set()


def test_malformed_payloads_are_dead_lettered_with_a_clear_reason(bus: Bus, job_id: str) -> None:
    key = bus.stream(job_id, "rollouts")
    good = to_fields(make_group(job_id, "good-before"))

    def with_payload(payload: bytes, gid: str = "bad", n: int | None = None) -> dict:
        return {
            b"k": b"group",
            b"id": gid.encode(),
            b"n": str(len(payload) if n is None else n),
            b"d": payload,
        }

    m = group_pb2.Group()
    m.ParseFromString(encode_group(make_group(job_id, "v7")))
    m.schema_version = 7
    wrong_version = m.SerializeToString()
    m.schema_version = 1
    m.ClearField("group_id")
    no_group_id = m.SerializeToString()
    full = encode_group(make_group(job_id, "cut", t=256))

    bus.redis.xadd(key, good)
    bad_entries = {
        "wrong version": with_payload(wrong_version, "v7"),
        "truncated in transit": with_payload(full[:1000], "cut", n=len(full)),
        "truncated payload": with_payload(full[: len(full) // 2], "cut2"),
        "missing group_id": with_payload(no_group_id, ""),
        "missing envelope fields": {b"d": full},
        "garbage": with_payload(b"\x00\x01 not protobuf \xff", "junk"),
        "payload string gone": {
            b"k": b"group",
            b"id": b"gone",
            b"n": b"10",
            b"b": f"{key}:blob:gone".encode(),
        },
    }
    for fields in bad_entries.values():
        bus.redis.xadd(key, fields)
    bus.redis.xadd(key, to_fields(make_group(job_id, "good-after")))

    stage = bus.consumer(job_id, "rollouts", "feedback", output="feedback")
    handled = []
    stage.run(lambda g: handled.append(g.group_id) or g, max_messages=2)
    assert handled == ["good-before", "good-after"]

    reasons = [letter.reason for letter in bus.dead_letters(job_id, "rollouts")]
    assert len(reasons) == len(bad_entries)
    wrong, cut, cut2, no_id, no_env, garbage, gone = reasons
    assert "schema_version 7 is not supported" in wrong
    assert "payload truncated: 1000 of" in cut
    assert "do not parse" in cut2 and "truncated" in cut2
    assert "group_id is missing" in no_id
    assert "lacks field(s) ['k', 'id', 'n']" in no_env
    assert "do not parse" in garbage
    assert f"payload blob '{key}:blob:gone' is missing" in gone
    assert all(r.startswith("malformed payload: ") for r in reasons)
    # Bad input is dead-lettered at once (deterministic), never retried in a loop.
    assert [letter.attempts for letter in bus.dead_letters(job_id, "rollouts")] == [1] * len(bad_entries)
    assert bus.backlog(job_id, "rollouts") == 0
