"""The bus: one Redis connection pool per process, producers and consumers on top of it."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from distil.bus import names
from distil.bus.config import BusConfig
from distil.bus.embedded import EmbeddedRedis, ensure_redis_url
from distil.bus.errors import BackpressureTimeout, BusUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which a command is retried on a fresh connection. BusyLoadingError (Redis
# still replaying its AOF after a restart) is a ConnectionError in redis-py.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry that was given up on, with why."""

    entry_id: str  # id in the dead-letter stream
    source_entry_id: str  # id it had in its stream
    message_id: str | None  # group / event id, when readable
    reason: str
    attempts: int
    consumer: str
    payload: bytes | None


class Bus:
    """Entry point: ``Bus(BusConfig(...))`` connects to ``config.url``, else ``$REDIS_URL``,
    else starts an embedded Redis (stopped by :meth:`close`)."""

    def __init__(self, config: BusConfig | None = None) -> None:
        self.config = config or BusConfig()
        self.embedded: EmbeddedRedis | None = None
        if self.config.url:
            self.url = self.config.url
        else:
            self.url, self.embedded = ensure_redis_url(self.config.embedded)
        self.redis = redis.Redis.from_url(
            self.url,
            socket_timeout=self.config.socket_timeout_s,
            socket_connect_timeout=self.config.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # retries are ours (call), with backoff and a deadline
            health_check_interval=0,
        )

    # -------------------------------------------------------------- plumbing

    def call(self, what: str, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(redis)``; on a dropped connection retry with exponential backoff and jitter
        until ``reconnect_timeout_s``, then raise BusUnavailable naming ``what`` was attempted.

        ``fn`` must be safe to repeat (the bus's writes are: duplicates are dropped by id)."""
        cfg = self.config
        deadline = time.monotonic() + cfg.reconnect_timeout_s
        delay = cfg.reconnect_backoff_initial_s
        while True:
            try:
                return fn(self.redis)
            except _TRANSIENT as exc:
                now = time.monotonic()
                if now >= deadline:
                    raise BusUnavailable(
                        f"Redis at {self.url} unreachable for {cfg.reconnect_timeout_s:.0f}s while {what}: "
                        f"{exc}. Check the server is running (REDIS_URL) or raise bus.reconnect_timeout_s"
                    ) from exc
                log.warning("Redis unreachable while %s (%s); retrying in %.2fs", what, exc, delay)
                time.sleep(min(delay * (0.5 + random.random()), max(deadline - now, 0.0)))
                delay = min(delay * 2, cfg.reconnect_backoff_max_s)

    def stream(self, job: str, stream: str) -> str:
        """Full key of a job's stream, ``{prefix}:{job}:{stream}``."""
        return names.stream_key(self.config.prefix, job, stream)

    def backlog(self, job: str, stream: str) -> int:
        """Entries in the stream not yet committed (consumed entries are deleted on commit)."""
        key = self.stream(job, stream)
        return self.call(f"reading the length of {key}", lambda r: r.xlen(key))

    def wait_for_room(self, key: str, limit: int | None = None, timeout_s: float | None = None) -> None:
        """Block until stream ``key`` holds fewer than ``limit`` (default max_in_flight) entries."""
        limit = limit or self.config.max_in_flight
        timeout_s = timeout_s if timeout_s is not None else self.config.backpressure_timeout_s
        deadline = time.monotonic() + timeout_s
        poll = self.config.backpressure_poll_s
        while True:
            n = self.call(f"reading the length of {key}", lambda r: r.xlen(key))
            if n < limit:
                return
            if time.monotonic() >= deadline:
                raise BackpressureTimeout(
                    f"waited {timeout_s:.0f}s for stream {key} to drop below {limit} in-flight entries "
                    f"(it holds {n}); is the stage that consumes it running and keeping up?"
                )
            time.sleep(poll)
            poll = min(poll * 2, 1.0)

    # -------------------------------------------------------------- factories

    def producer(self, job: str, stream: str):
        from distil.bus.producer import Producer

        return Producer(self, job, stream)

    def consumer(
        self, job: str, stream: str, group: str, *, name: str | None = None, output: str | None = None
    ):
        from distil.bus.consumer import Consumer

        return Consumer(self, job, stream, group, name=name, output=output)

    # -------------------------------------------------------------- inspection

    def dead_letters(self, job: str, stream: str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of a job's stream."""
        key = names.dead_letter_key(self.stream(job, stream))
        rows = self.call(f"reading {key}", lambda r: r.xrange(key, count=count))
        out = []
        for entry_id, f in rows:
            mid = f.get(b"id")
            out.append(
                DeadLetter(
                    entry_id=entry_id.decode(),
                    source_entry_id=f[b"source_entry_id"].decode(),
                    message_id=mid.decode(errors="replace") if mid else None,
                    reason=f[b"reason"].decode(errors="replace"),
                    attempts=int(f[b"attempts"]),
                    consumer=f[b"consumer"].decode(errors="replace"),
                    payload=f.get(b"d"),
                )
            )
        return out

    def delete_job(self, job: str) -> int:
        """Remove every key of a job (streams, dead letters, markers). Returns how many."""
        pattern = f"{self.config.prefix}:{names.check_name('job id', job)}:*"

        def run(r: redis.Redis) -> int:
            n = 0
            batch = []
            for key in r.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    n += r.delete(*batch)
                    batch.clear()
            if batch:
                n += r.delete(*batch)
            return n

        return self.call(f"deleting job {job}", run)

    # -------------------------------------------------------------- lifetime

    def close(self) -> None:
        self.redis.close()
        if self.embedded is not None:
            self.embedded.stop()
            if os.environ.get("REDIS_URL") == self.url:  # we exported it; it is gone now
                del os.environ["REDIS_URL"]

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
