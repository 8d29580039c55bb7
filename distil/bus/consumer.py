"""Reading a job's stream as one consumer of a consumer group, committing exactly once.

Guarantees (see docs/bus.md):
* at-least-once delivery: an entry stays pending until committed; entries idle longer
  than ``claim_idle_s`` (their consumer died or hung) are claimed by a live consumer
  with XAUTOCLAIM;
* exactly-once effect: :meth:`Consumer.commit` writes the output entry, a "done" marker
  for the message id and the input XACK in one MULTI/EXEC (guarded by WATCH on the
  marker), so a redelivered or duplicated message never produces a second output;
* poison and malformed entries go to ``{stream}:dead`` with the reason, after
  ``max_attempts`` deliveries (handler errors, crashes) or at once (bad payloads);
* committed entries are deleted from the stream, so its length is the backlog and
  memory stays bounded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from distil.bus import names
from distil.bus.envelope import Message, blob_ref, from_fields, peek_id, prepare
from distil.bus.errors import SchemaError
from distil.bus.schema import Group

if TYPE_CHECKING:
    from distil.bus.client import Bus

log = logging.getLogger(__name__)

Handler = Callable[[Message], Message | None]


@dataclass(slots=True)
class Delivery:
    """One message handed to a consumer. ``attempt`` is 1 on first delivery."""

    entry_id: str
    message_id: str
    attempt: int
    value: Message
    fields: dict[bytes, bytes] = field(repr=False)

    @property
    def group(self) -> Group:
        if not isinstance(self.value, Group):
            raise TypeError(f"entry {self.entry_id} carries a {type(self.value).__name__}, not a Group")
        return self.value


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Consumer:
    """Consumer ``name`` of consumer group ``group`` on a job's ``stream``.

    ``output`` names the stream that :meth:`commit` writes results to (None for a sink
    such as the learner). Reads wait while ``output`` is full (backpressure).
    """

    def __init__(
        self,
        bus: Bus,
        job: str,
        stream: str,
        group: str,
        *,
        name: str | None = None,
        output: str | None = None,
    ) -> None:
        self.bus = bus
        self.cfg = bus.config
        self.key = bus.stream(job, stream)
        self.out_key = bus.stream(job, output) if output else None
        self.group = names.check_name("consumer group", group)
        self.name = name or _default_name()
        self.dead_key = names.dead_letter_key(self.key)
        self.errors_key = names.errors_key(self.key)
        self._claim_cursor = "0-0"
        self._last_claim = float("-inf")
        self.ensure_group()

    # ---------------------------------------------------------------- setup

    def ensure_group(self) -> None:
        """Create the stream and consumer group if missing (from the start of the stream)."""

        def create(r: redis.Redis) -> None:
            try:
                r.xgroup_create(self.key, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self.bus.call(f"creating consumer group {self.group} on {self.key}", create)

    def _call(self, what: str, fn):
        """bus.call, re-creating the group if Redis lost it (e.g. restarted without persistence)."""
        try:
            return self.bus.call(what, fn)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("consumer group %s on %s vanished; re-creating it", self.group, self.key)
            self.ensure_group()
            return self.bus.call(what, fn)

    # ---------------------------------------------------------------- reading

    def read(self, count: int | None = None, block_s: float | None = None) -> list[Delivery]:
        """Up to ``count`` deliveries: stale pending entries first, then new ones.

        Blocks up to ``block_s`` (default ``config.block_s``) when nothing is waiting and
        returns [] on timeout. Malformed entries, entries over ``max_attempts`` and
        messages already committed are handled here and never returned.
        """
        count = count or self.cfg.read_count
        block_s = self.cfg.block_s if block_s is None else block_s
        if self.out_key is not None:
            self.bus.wait_for_room(self.out_key)
        raw: list[tuple[str, dict | None, int]] = []
        now = time.monotonic()
        if now - self._last_claim >= self.cfg.claim_interval_s:
            raw += self._claim(count)
        if len(raw) < count:
            raw += self._read_new(count - len(raw), None if raw else block_s)
        return self._admit(raw)

    def _claim(self, count: int) -> list[tuple[str, dict | None, int]]:
        idle_ms = max(1, int(self.cfg.claim_idle_s * 1000))

        def run(r: redis.Redis):
            resp = r.xautoclaim(
                self.key,
                self.group,
                self.name,
                min_idle_time=idle_ms,
                start_id=self._claim_cursor,
                count=count,
            )
            cursor, entries = resp[0], resp[1]
            attempts = {}
            if entries:
                with r.pipeline(transaction=False) as p:
                    for entry_id, _ in entries:
                        p.xpending_range(self.key, self.group, min=entry_id, max=entry_id, count=1)
                    for rows in p.execute():
                        for row in rows:
                            attempts[row["message_id"]] = row["times_delivered"]
            return cursor, entries, attempts

        cursor, entries, attempts = self._call(f"claiming stale entries of {self.key}", run)
        cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._last_claim = time.monotonic()
        if entries:
            log.info("%s claimed %d stale entries of %s", self.name, len(entries), self.key)
        # The PEL entry's delivery count was bumped by the claim; default 2 if it vanished meanwhile.
        return [(eid.decode(), fields, attempts.get(eid, 2)) for eid, fields in entries]

    def _read_new(self, count: int, block_s: float | None) -> list[tuple[str, dict | None, int]]:
        block_ms = None if block_s is None else max(1, int(block_s * 1000))
        resp = self._call(
            f"reading {self.key} as {self.group}/{self.name}",
            lambda r: r.xreadgroup(self.group, self.name, {self.key: ">"}, count=count, block=block_ms),
        )
        out = []
        for _stream, entries in resp or []:
            out += [(eid.decode(), fields, 1) for eid, fields in entries]
        return out

    def _admit(self, raw: list[tuple[str, dict | None, int]]) -> list[Delivery]:
        live = []
        for entry_id, fields, attempt in raw:
            if not fields:  # deleted while pending (e.g. trimmed by hand): nothing to deliver
                self._finish([(entry_id, {})])
            elif attempt > self.cfg.max_attempts:
                last = self._call("reading the last error", lambda r, e=entry_id: r.hget(self.errors_key, e))
                self.dead_letter(
                    entry_id,
                    fields,
                    f"gave up after {attempt - 1} deliveries without a commit (max_attempts="
                    f"{self.cfg.max_attempts}); consumers crashed, hung or failed on it; last error: "
                    f"{last.decode(errors='replace') if last else 'none recorded (consumer crashed?)'}",
                    attempt - 1,
                )
            else:
                live.append((entry_id, fields, attempt))
        if not live:
            return []
        # Drop messages already committed (duplicates) before fetching or decoding anything.
        ids = [peek_id(f) for _, f, _ in live]
        keyed = [(i, names.done_key(self.key, mid)) for i, mid in enumerate(ids) if mid]
        flags = self._call("checking done markers", lambda r: r.mget([k for _, k in keyed])) if keyed else []
        done = {i for (i, _), flag in zip(keyed, flags, strict=True) if flag is not None}
        fresh, seen, dup = [], set(), []
        for i, (entry_id, fields, attempt) in enumerate(live):
            if i in done or (ids[i] and ids[i] in seen):
                dup.append((entry_id, fields))
            else:
                seen.add(ids[i])
                fresh.append((entry_id, fields, attempt))
        if dup:
            log.info(
                "%s: %d duplicate(s) of committed messages on %s acknowledged", self.name, len(dup), self.key
            )
            self._finish(dup)
        # Large payloads live in a string beside their entry.
        refs = [blob_ref(f) for _, f, _ in fresh]
        wanted = [ref for ref in refs if ref]
        if wanted:
            blobs = dict(zip(wanted, self._call("fetching payloads", lambda r: r.mget(wanted)), strict=True))
            for (_, fields, _), ref in zip(fresh, refs, strict=True):
                if ref and blobs[ref] is not None:
                    fields[b"d"] = blobs[ref]
        out = []
        for entry_id, fields, attempt in fresh:
            try:
                value = from_fields(fields)
            except SchemaError as exc:
                self.dead_letter(entry_id, fields, f"malformed payload: {exc}", attempt)
                continue
            out.append(Delivery(entry_id, peek_id(fields) or "", attempt, value, fields))
        return out

    # ---------------------------------------------------------------- committing

    def commit(self, delivery: Delivery, output: Message | None = None) -> bool:
        """Write ``output`` (if any) to the output stream and acknowledge ``delivery``, atomically.

        Returns False when the message had already been committed (by a consumer that
        lost its claim, or via a duplicate entry): nothing is written then, only the ack.
        """
        return self.commit_many([(delivery, output)]) == 1

    def commit_many(self, items: Sequence[tuple[Delivery, Message | None]]) -> int:
        """Commit several deliveries in one transaction; returns how many were new."""
        if not items:
            return 0
        prepared = []
        for d, out in items:
            if out is not None and self.out_key is None:
                raise ValueError(
                    f"consumer of {self.key} has no output stream; pass output=... to Bus.consumer"
                )
            outgoing = prepare(out, self.cfg.inline_max_bytes) if out is not None else None
            prepared.append((d, names.done_key(self.key, d.message_id), outgoing))
        entries = [(d.entry_id, d.fields) for d, _, _ in prepared]
        done_keys = list({k for _, k, _ in prepared})
        ttl = self.cfg.done_ttl_s

        def tx(r: redis.Redis) -> int:
            while True:
                with r.pipeline(transaction=True) as p:
                    try:
                        p.watch(*done_keys)
                        flags = dict(zip(done_keys, p.mget(done_keys), strict=True))
                        p.multi()
                        new = 0
                        for d, key, outgoing in prepared:
                            if flags.get(key) is not None:
                                continue
                            flags[key] = b"1"  # a second entry with the same id in this batch
                            if outgoing is not None:
                                outgoing.queue_xadd(p, self.out_key)
                            p.set(key, d.entry_id, ex=ttl)
                            new += 1
                        self._queue_finish(p, entries)
                        p.execute()
                        return new
                    except redis.WatchError:
                        continue  # someone committed one of these ids meanwhile: re-check

        where = f" and writing to {self.out_key}" if self.out_key else ""
        return self._call(f"committing {len(entries)} entries of {self.key}{where}", tx)

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Commit deliveries that produce no output (a sink, e.g. the learner after a step)."""
        return self.commit_many([(d, None) for d in deliveries])

    def _queue_finish(self, p, entries: list[tuple[str, dict]]) -> None:
        """Queue the ack of entries: XACK, XDEL, forget their errors, drop their payload strings."""
        ids = [entry_id for entry_id, _ in entries]
        p.xack(self.key, self.group, *ids)
        p.xdel(self.key, *ids)
        p.hdel(self.errors_key, *ids)
        blobs = [ref for _, fields in entries if (ref := blob_ref(fields))]
        if blobs:
            p.unlink(*blobs)  # freed in the background: a scored group is ~50 MB

    def _finish(self, entries: list[tuple[str, dict]]) -> None:
        def run(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as p:
                self._queue_finish(p, entries)
                p.execute()

        self._call(f"acknowledging {len(entries)} entries of {self.key}", run)

    # ---------------------------------------------------------------- failures

    def fail(self, delivery: Delivery, error: BaseException | str) -> bool:
        """Record that handling failed. Dead-letters on the last attempt (returns True);
        otherwise the entry stays pending and is retried after ``claim_idle_s``."""
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        reason = reason[:4000]
        if delivery.attempt >= self.cfg.max_attempts:
            self.dead_letter(
                delivery.entry_id,
                delivery.fields,
                f"handler failed on attempt {delivery.attempt}/{self.cfg.max_attempts}: {reason}",
                delivery.attempt,
            )
            return True
        self._call("recording a handler error", lambda r: r.hset(self.errors_key, delivery.entry_id, reason))
        return False

    def dead_letter(self, entry_id: str, fields: dict[bytes, bytes], reason: str, attempts: int) -> None:
        """Move an entry to ``{stream}:dead`` with ``reason`` and acknowledge it, atomically."""
        letter = {
            b"source_stream": self.key,
            b"source_entry_id": entry_id,
            b"reason": reason,
            b"attempts": str(attempts),
            b"consumer": self.name,
            b"group": self.group,
            b"at": repr(time.time()),
        }
        ref = blob_ref(fields)
        if ref and b"d" not in fields:  # keep the payload with the letter, not in a string that could leak
            blob = self._call("fetching a payload to dead-letter", lambda r: r.get(ref))
            if blob is not None:
                letter[b"d"] = blob
        for k in (b"k", b"id", b"n", b"d"):
            if k in fields:
                letter[k] = fields[k]

        def run(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as p:
                p.xadd(self.dead_key, letter, maxlen=self.cfg.dead_letter_maxlen, approximate=True)
                self._queue_finish(p, [(entry_id, fields)])
                p.execute()

        self._call(f"dead-lettering {entry_id} of {self.key}", run)
        log.warning("dead-lettered %s of %s: %s", entry_id, self.key, reason)

    # ---------------------------------------------------------------- long handlers

    def keepalive(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of deliveries still being worked on so no one claims them
        (XCLAIM JUSTID, which does not count as a delivery attempt)."""
        if not deliveries:
            return
        ids = [d.entry_id for d in deliveries]
        self._call(
            f"keeping {len(ids)} entries of {self.key} claimed",
            lambda r: r.xclaim(self.key, self.group, self.name, 0, ids, justid=True),
        )

    def run(
        self,
        handler: Handler,
        *,
        stop: threading.Event | Callable[[], bool] | None = None,
        max_messages: int | None = None,
    ) -> int:
        """Read, handle, commit until ``stop`` is set or ``max_messages`` were committed.

        ``handler(value)`` returns the output message (or None). If it raises, the error
        is recorded and the entry retried by a later claim, then dead-lettered after
        ``max_attempts``; the loop goes on. Returns the number of messages committed.
        """
        stopped = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))
        committed = 0
        while not stopped():
            count = self.cfg.read_count
            if max_messages is not None:
                if committed >= max_messages:
                    break
                count = min(count, max_messages - committed)
            batch = self.read(count=count)
            if not batch:
                continue
            with _Heartbeat(self, batch) as beat:
                for d in batch:
                    try:
                        out = handler(d.value)
                    except Exception as exc:
                        log.exception(
                            "handler failed on %s of %s (attempt %d)", d.entry_id, self.key, d.attempt
                        )
                        self.fail(d, exc)
                    else:
                        try:
                            committed += self.commit(d, out)
                        except SchemaError as exc:  # the handler built an invalid message
                            log.error("handler output for %s of %s is invalid: %s", d.entry_id, self.key, exc)
                            self.fail(d, f"handler returned an invalid message: {exc}")
                    beat.release(d)
        return committed


class _Heartbeat:
    """While a batch is being handled, keep its unfinished entries claimed (every claim_idle_s / 3)."""

    def __init__(self, consumer: Consumer, deliveries: Sequence[Delivery]) -> None:
        self.consumer = consumer
        self.pending = {d.entry_id: d for d in deliveries}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="bus-heartbeat")

    def release(self, d: Delivery) -> None:
        with self.lock:
            self.pending.pop(d.entry_id, None)

    def _beat(self) -> None:
        period = self.consumer.cfg.claim_idle_s / 3
        while not self.stop.wait(period):
            with self.lock:
                held = list(self.pending.values())
            try:
                self.consumer.keepalive(held)
            except Exception:  # a missed beat only risks a duplicate attempt, never a loss
                log.warning("heartbeat on %s failed", self.consumer.key, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
