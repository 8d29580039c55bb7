"""Drive a bus consumer with many groups in flight at once (continuous batching across groups).

The consumer is blocking (Redis); the stage handler is a coroutine run on ``loop`` (the
engine runner's loop or a Serve replica's). Up to ``max_inflight`` groups are handled
concurrently; each result is committed as soon as it is ready, so one slow group never
holds back the others. Permanent errors (bad input) dead-letter the group with the
reason; other errors leave it pending for a retry (the bus dead-letters it after
``max_attempts``; set the bus's ``claim_idle_s`` above the longest handling time, or
live consumers will claim groups that are still being worked on). Groups in flight when ``stop`` is set are finished first (up to
``drain_timeout_s``); whatever is left is redelivered by the bus to a live consumer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from distil.bus import Bus, BusConfig, Group, weights

log = logging.getLogger(__name__)

Handler = Callable[[Group], Awaitable[Group | None]]


class LoopThread:
    """An asyncio event loop running on a daemon thread (for stages without an engine runner)."""

    def __init__(self, name: str = "distil-stage-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro, timeout_s: float, what: str):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError as exc:
            fut.cancel()
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f}s") from exc

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@dataclass(slots=True)
class LoopStats:
    committed: int = 0
    dead_lettered: int = 0
    failed: int = 0


def run_consumer(
    consumer,
    handle: Handler,
    loop: asyncio.AbstractEventLoop,
    *,
    stop: threading.Event,
    max_inflight: int = 64,
    permanent: tuple[type[BaseException], ...] = (ValueError,),
    max_messages: int | None = None,
    drain_timeout_s: float = 120.0,
    stats: LoopStats | None = None,
) -> LoopStats:
    """Read with blocking reads (no polling) while there is room; results are committed by
    a second thread as soon as each handler finishes."""
    stats = stats or LoopStats()
    cond = threading.Condition()
    inflight: dict[str, Any] = {}  # entry id -> delivery
    finished: list[tuple[concurrent.futures.Future, Any]] = []

    def finish(fut, delivery) -> None:
        try:
            out = fut.result()
        except permanent as exc:
            reason = f"{type(exc).__name__}: {exc}"
            consumer.dead_letter(delivery.entry_id, delivery.fields, reason, delivery.attempt)
            stats.dead_lettered += 1
            log.warning("group %s dead-lettered: %s", delivery.message_id, reason)
        except Exception as exc:  # transient: left pending, retried by the bus
            consumer.fail(delivery, exc)
            stats.failed += 1
            log.error("group %s failed (attempt %d): %s", delivery.message_id, delivery.attempt, exc)
        else:
            consumer.commit(delivery, out)
            stats.committed += 1

    def on_done(fut, delivery) -> None:
        with cond:
            finished.append((fut, delivery))
            cond.notify_all()

    def committer() -> None:
        while True:
            with cond:
                while not finished and not (done_reading.is_set() and not inflight):
                    cond.wait(timeout=1.0)
                batch, finished[:] = list(finished), []
                if not batch and done_reading.is_set() and not inflight:
                    return
            for fut, delivery in batch:
                try:
                    finish(fut, delivery)
                except Exception:  # the bus itself failed (e.g. Redis gone past its timeout)
                    log.exception("could not commit group %s; the bus will redeliver it", delivery.message_id)
                with cond:
                    inflight.pop(delivery.entry_id, None)
                    cond.notify_all()

    done_reading = threading.Event()
    commit_thread = threading.Thread(target=committer, name="bus-loop-committer", daemon=True)
    commit_thread.start()
    try:
        while not stop.is_set():
            if max_messages is not None and stats.committed + stats.dead_lettered >= max_messages:
                break
            with cond:
                while len(inflight) >= max_inflight and not stop.is_set():
                    cond.wait(timeout=0.5)
                room = max_inflight - len(inflight)
                busy = set(inflight)
            if room <= 0:
                continue
            for d in consumer.read(count=room, block_s=0.5):
                if d.entry_id in busy:  # our own entry, reclaimed while still in flight
                    continue
                with cond:
                    inflight[d.entry_id] = d
                fut = asyncio.run_coroutine_threadsafe(handle(d.group), loop)
                fut.add_done_callback(lambda f, d=d: on_done(f, d))
    finally:
        deadline = time.monotonic() + drain_timeout_s
        with cond:
            while inflight and time.monotonic() < deadline:
                cond.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            left = len(inflight)
            inflight.clear()
            done_reading.set()
            cond.notify_all()
        commit_thread.join(timeout=30)
        if left:
            log.warning(
                "%d groups still in flight after %.0fs; the bus will redeliver them", left, drain_timeout_s
            )
    return stats


def start_consumer(
    bus: dict[str, Any] | None,
    job: str,
    streams: tuple[str, str, str],
    handle,
    loop: asyncio.AbstractEventLoop,
    *,
    stop: threading.Event,
    max_inflight: int,
    permanent: tuple[type[BaseException], ...],
    stats: LoopStats,
    name: str,
    expect_weights: Callable[[int], None] | None = None,
) -> tuple[Bus, threading.Thread]:
    """Connect to the bus and run ``run_consumer`` on a daemon thread for one job's stage.

    ``streams`` is (input stream, consumer group, output stream). ``expect_weights``: for a
    stage whose engine takes the learner's weight updates, called before the consumer starts
    with the version of the job's weights when the learner has already published some (this
    replica replaces one that died); the learner is then asked to send them again (see
    ``distil.bus.weights``). Returns the bus (close it on shutdown) and the started thread.
    """
    source, group, output = streams
    client = Bus(BusConfig.model_validate(bus or {}))
    if expect_weights is not None:
        published = weights.published_version(client, job)
        if published > 0:
            log.warning("%s of job %s starts behind the job's weights (version %d); asking for them",
                        name, job, published)  # fmt: skip
            expect_weights(published)
            weights.request_resend(client, job)
    consumer = client.consumer(job, source, group=group, output=output)
    thread = threading.Thread(
        target=run_consumer,
        args=(consumer, handle, loop),
        kwargs=dict(stop=stop, max_inflight=max_inflight, permanent=permanent, stats=stats),
        name=name,
        daemon=True,
    )
    thread.start()
    return client, thread


async def resolve_tensors(named_tensors):
    """Weights as the learner publishes them to a Serve handle: a dict, pairs, or a Ray
    ObjectRef to either (Serve does not resolve refs nested in a handle call)."""
    if type(named_tensors).__name__ == "ObjectRef":
        named_tensors = await named_tensors
    return named_tensors
