"""Writing groups and events onto a job's stream, with backpressure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from distil.bus.envelope import Message, prepare

if TYPE_CHECKING:
    from distil.bus.client import Bus


class Producer:
    """Appends messages to ``{prefix}:{job}:{stream}``.

    ``publish`` first waits (up to ``backpressure_timeout_s``) while the stream holds
    ``max_in_flight`` or more uncommitted entries. Writes are retried across reconnects;
    a retry can append a duplicate, which consumers drop by message id.

    Each write also reads the stream's length back, so while there is known room the
    next write needs no separate length check (consumers only ever shorten the stream).
    """

    def __init__(self, bus: Bus, job: str, stream: str) -> None:
        self.bus = bus
        self.job = job
        self.key = bus.stream(job, stream)
        self._room = 0  # entries we may still add without asking Redis

    def publish(self, value: Message) -> str:
        """Append one Group or LearnerEvent; returns its entry id."""
        return self.publish_many([value])[0]

    def publish_many(self, values: Sequence[Message]) -> list[str]:
        """Append several messages in one round trip (after one backpressure check)."""
        limit = self.bus.config.inline_max_bytes
        entries = [prepare(v, limit) for v in values]
        if self._room < len(entries):
            self.bus.wait_for_room(self.key)

        def write(r):
            # One transaction: a large payload's string and its entry appear together.
            with r.pipeline(transaction=True) as p:
                positions = []
                for e in entries:
                    e.queue_xadd(p, self.key)
                    positions.append(len(p) - 1)
                p.xlen(self.key)
                replies = p.execute()
                return [replies[i] for i in positions], replies[-1]

        ids, length = self.bus.call(f"appending {len(entries)} message(s) to {self.key}", write)
        self._room = self.bus.config.max_in_flight - length
        return [i.decode() for i in ids]
