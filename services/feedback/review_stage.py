"""The feedback stage of a job with a ``human`` source: groups with responses selected for
review are parked in the job's review queue instead of going on, and a releaser thread
sends each one on (to ``feedback``) once its reviews are in or its deadline has passed.

Nothing waits in a consumer: parking takes one transaction, so the consumer loops keep
grading other groups while reviewers work. Custody of a parked group moves from the
``rollouts`` stream to the queue without a gap: the group is written to the queue
*before* the rollout entry is acknowledged (the handler returns None, the bus then
commits), and a group graded again after a crash in between is not parked twice (the
queue's park is idempotent by group id). It leaves the queue only in the transaction that
appends it to ``feedback``. So a restart of the feedback worker loses nothing: the new
worker's releaser picks up every parked group, reviewed or not.
"""

from __future__ import annotations

import logging
import threading

from distil.bus import Bus, Group

from .grading import Grader
from .review_queue import ReviewQueue
from .sources.human import HumanSourceConfig, select
from .stage import FeedbackStage, TaskLookup

log = logging.getLogger(__name__)
RELEASE_POLL_S = 0.5


def human_source(grader: Grader) -> HumanSourceConfig | None:
    """The job's human source, if any (at most one)."""
    found = [s for s in grader.config.sources if isinstance(s, HumanSourceConfig)]
    if len(found) > 1:
        raise ValueError("feedback.sources: at most one source of kind 'human'")
    return found[0] if found else None


def make_stage(grader: Grader, lookup: TaskLookup | None = None) -> FeedbackStage:
    """The plain stage, or the reviewing one when the grader's sources include ``human``."""
    config = human_source(grader)
    return FeedbackStage(grader, lookup) if config is None else ReviewingStage(grader, config, lookup)


class ReviewingStage(FeedbackStage):
    def __init__(
        self,
        grader: Grader,
        config: HumanSourceConfig,
        lookup: TaskLookup | None = None,
        *,
        poll_s: float = RELEASE_POLL_S,
    ) -> None:
        super().__init__(grader, lookup)
        self.config = config
        self.poll_s = poll_s
        self.queue: ReviewQueue | None = None
        self.parked = 0
        self.released = 0
        self.release_error = ""

    def bind(self, bus: Bus, job: str) -> ReviewQueue:
        self.queue = ReviewQueue(bus, job)
        self.out_key = bus.stream(job, "feedback")
        return self.queue

    def handle(self, group: Group) -> Group | None:
        graded = super().handle(group)
        if self.queue is None:
            raise RuntimeError("ReviewingStage.handle before bind(bus, job): the review queue is unknown")
        success = [r.feedback.success if r.feedback else False for r in graded.responses]
        chosen = select(self.config, graded.group_id, success)
        if not chosen:
            return graded
        if self.queue.park(graded, chosen, self.config, self.lookup(graded).verifier):
            self.parked += 1
        return None  # acknowledged without output: the queue holds it now

    def release_due(self) -> int:
        """Send on every group that is due; returns how many were released."""
        assert self.queue is not None
        n = 0
        for gkey in self.queue.due():
            self.queue.bus.wait_for_room(self.out_key)
            if self.queue.release(gkey, self.out_key) is not None:
                n += 1
        self.released += n
        return n

    def run(
        self,
        bus: Bus,
        job: str,
        *,
        stop: threading.Event,
        consumers: int = 2,
        max_messages: int | None = None,
    ) -> int:
        self.bind(bus, job)
        done = threading.Event()  # the consumers have returned (stop, or max_messages)

        def releaser() -> None:
            while not stop.is_set() and not done.is_set():
                try:
                    self.release_due()
                    self.release_error = ""
                except Exception as exc:  # Redis away: retried; reported through health meanwhile
                    self.release_error = f"{type(exc).__name__}: {exc}"
                    log.exception("releasing reviewed groups of job %s failed", job)
                done.wait(self.poll_s)

        thread = threading.Thread(target=releaser, name=f"review-releaser-{job}", daemon=True)
        thread.start()
        try:
            return super().run(bus, job, stop=stop, consumers=consumers, max_messages=max_messages)
        finally:
            done.set()
            thread.join(timeout=60)
