"""The learner stage: scored groups from the bus -> training steps -> events.

Exactly-once training: a group's bus entry is acknowledged only once a checkpoint covers
the step that trained it. If the learner dies in between, the entries are still pending,
are claimed again after ``claim_idle_s`` and retrained from that checkpoint, whatever their
age — nothing accepted is lost and nothing is trained twice into the surviving weights (a
redelivered group the restored weights already went through, from a learner that died
between saving a checkpoint and acknowledging, is acknowledged, not retrained). The weights'
lineage (the group ids of every step they went through) is kept in ``Progress`` and saved
with each checkpoint, so this can be audited by group id.

A learner restored behind the weights the engines run (its predecessor published steps
after its last checkpoint) sends the restored weights at once as a newer version: policy
versions only increase, and may then run ahead of steps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distil.bus import Bus, CheckpointWritten, Delivery, JobFinished, StepDone, WeightsUpdated, is_stale
from distil.bus import weights as published_weights
from services.learner.backend import TrainerBackend
from services.learner.checkpoint import Progress
from services.learner.convert import GroupRejected, group_to_samples
from services.learner.publish import ReceiverUnavailable
from services.learner.workers import WorkerGroupRestarted

log = logging.getLogger(__name__)


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    groups_per_step: int = Field(default=32, ge=1, description="Question batch size (Tables 3-4).")
    max_staleness: int = Field(default=1, ge=0, description="Drop groups more versions old than this.")
    checkpoint_every: int = Field(default=10, ge=1)
    publish_every: int = Field(default=1, ge=1, description="Send weights to the engines every k steps.")
    wait_timeout_s: float = Field(default=600.0, gt=0, description="Longest wait for one step's groups.")
    publish_retry_s: float = Field(
        default=600.0, gt=0, description="How long to resend weights to a receiver that died (replaced)."
    )


@dataclass
class StageCounters:
    steps: int = 0
    groups_trained: int = 0
    dropped_stale: int = 0
    rejected: int = 0
    already_trained: int = 0  # redelivered groups the restored weights already went through
    worker_restarts: int = 0
    trained_group_ids: list[str] = field(default_factory=list)  # by this stage, replays not repeated
    restored_versions: list[int] = field(default_factory=list)  # checkpoint versions restarts went back to


class LearnerStage:
    def __init__(
        self,
        bus: Bus,
        job: str,
        backend: TrainerBackend,
        config: StageConfig,
        *,
        consumer_name: str | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        timeline: Path | None = None,
    ):
        """``timeline``: a JSONL file that gets every step's stage spans (None = not kept)."""
        self.bus, self.job, self.backend, self.cfg = bus, job, backend, config
        self.timeline = timeline
        self.consumer = bus.consumer(job, "scored", group="learner", name=consumer_name)
        self.events = bus.producer(job, "events")
        self.on_step = on_step
        self.progress = backend.resume() or Progress()
        self.counters = StageCounters()
        self._reported_restarts = 0  # worker restarts already reported in a step's metrics
        # Steps trained since the last checkpoint, with their deliveries (not acknowledged yet).
        self.pending_steps: list[list[tuple[Delivery, list, list[float]]]] = []
        # Every group in these weights' lineage (restored, then trained here).
        self._in_lineage = {g for step in self.progress.trained_groups for g in step}
        self._skipped_versions = 0  # versions skipped by _overtake_published, not checkpointed yet
        self._overtake_published()

    @property
    def pending(self) -> list[Delivery]:
        return [d for step in self.pending_steps for d, _, _ in step]

    @property
    def version(self) -> int:
        return self.progress.policy_version

    def _collect(self) -> list[tuple[Delivery, list, list[float]]]:
        want = self.cfg.groups_per_step
        got: list[tuple[Delivery, list, list[float]]] = []
        deadline = time.monotonic() + self.cfg.wait_timeout_s
        while len(got) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {self.cfg.wait_timeout_s:.0f}s for {want} scored groups on "
                    f"{self.consumer.key} and got {len(got)}; are the rollout, feedback and teacher stages running?"
                )
            self.consumer.keepalive(self.pending + [d for d, _, _ in got])
            if published_weights.take_resend_request(self.bus, self.job):  # a restarted engine
                log.warning(
                    "job %s: an engine asked for the weights; sending version %d", self.job, self.version
                )
                self._publish(self.version)
            for d in self.consumer.read(count=want - len(got)):
                g = d.group
                if g.group_id in self._in_lineage:
                    # Trained into the restored weights already: the learner that checkpointed
                    # them died before acknowledging. Acknowledge it now; never train it twice.
                    self.consumer.ack([d])
                    self.counters.already_trained += 1
                    continue
                # A redelivered group was accepted by a learner that died before a checkpoint
                # covered it: it is retrained whatever its age (nothing accepted is lost).
                if d.attempt == 1 and is_stale(g.policy_version, self.version, self.cfg.max_staleness):
                    self.consumer.ack([d])  # dropping is final: it will never be trained
                    self.counters.dropped_stale += 1
                    continue
                try:
                    samples, rewards = group_to_samples(g, self.backend.vocab_size, len(got))
                except GroupRejected as exc:
                    self.consumer.dead_letter(d.entry_id, d.fields, str(exc), d.attempt)
                    self.counters.rejected += 1
                    continue
                got.append((d, samples, rewards))
        return got

    def step(self) -> dict[str, float]:
        w0 = time.time()
        t0 = time.perf_counter()
        batch = self._collect()
        t1 = time.perf_counter()
        samples = [s for _, ss, _ in batch for s in ss]
        rewards = [r for _, _, rs in batch for r in rs]
        w1 = time.time()
        metrics = self._train(samples, rewards)
        w2 = time.time()
        spans: dict[str, list[tuple[float, float]]] = {"wait_data": [(w0, w1)], "learner": [(w1, w2)]}
        for d, _, _ in batch:
            for sp in d.group.spans:
                spans.setdefault(sp.stage, []).append((sp.start, sp.end))
        for stage in ("rollout", "feedback", "teacher"):
            got = spans.get(stage, [])
            metrics[f"time_{stage}"] = sum(b - a for a, b in got) / max(len(got), 1)  # mean per group
        metrics["time_train"] = w2 - w1
        self.pending_steps.append(batch)
        self.progress.trained_groups.append(_group_ids(batch))
        self._in_lineage.update(self.progress.trained_groups[-1])
        self.progress.policy_version += 1
        self.counters.steps += 1
        self.counters.groups_trained += len(batch)
        self.counters.trained_group_ids += [d.group.group_id for d, _, _ in batch]
        n = len(rewards)
        metrics |= {
            "time_wait_data": t1 - t0,
            "reward_mean": sum(rewards) / n,
            "success_rate": sum(
                1.0 for d, _, _ in batch for r in d.group.responses if r.feedback and r.feedback.success
            )
            / n,
            "teacher_signal_frac": sum(1.0 for s in samples if s.teacher_mask) / n,
            "dropped_stale": float(self.counters.dropped_stale),
            "rejected_groups": float(self.counters.rejected),
            "already_trained": float(self.counters.already_trained),
            "worker_restarts": float(self.counters.worker_restarts),
        }
        if self.counters.steps % self.cfg.publish_every == 0:
            t2 = time.perf_counter()
            version = self.version
            w3 = time.time()
            self._publish(version)
            metrics["time_weight_push"] = time.perf_counter() - t2
            spans["weight_push"] = [(w3, time.time())]
            self.events.publish(
                WeightsUpdated(job_id=self.job, policy_version=version, step=self.counters.steps)
            )
        self._record_timeline(spans)
        if self.counters.worker_restarts > self._reported_restarts:  # workers went back to a checkpoint
            metrics["restored_policy_version"] = float(self.counters.restored_versions[-1])
            metrics["worker_restarts"] = float(self.counters.worker_restarts)
            self._reported_restarts = self.counters.worker_restarts
        self.events.publish(
            StepDone(job_id=self.job, step=self.counters.steps, policy_version=self.version, metrics=metrics)
        )
        if self.on_step is not None:
            self.on_step(self.version, metrics)
        if self.counters.steps % self.cfg.checkpoint_every == 0:
            self.checkpoint()
        return metrics

    def _retrying(self, action: Callable[[], object]):
        """Run ``action``; if the workers were restarted from the last checkpoint meanwhile,
        retrain the steps since then (same groups, same order) and run it again."""
        replay = False
        while True:
            try:
                if replay:
                    for batch in self.pending_steps:
                        self.backend.step(
                            [s for _, ss, _ in batch for s in ss], [r for _, _, rs in batch for r in rs]
                        )
                        self.progress.trained_groups.append(_group_ids(batch))
                        self.progress.policy_version += 1
                    self.progress.policy_version += self._skipped_versions  # never back below the engines
                    replay = False
                return action()
            except WorkerGroupRestarted as restarted:
                self.counters.worker_restarts += 1
                self.progress = restarted.progress or Progress()
                self.counters.restored_versions.append(self.progress.policy_version)
                log.warning(
                    "job %s: training workers restarted from the checkpoint at policy version %d; "
                    "retraining the %d steps since",
                    self.job,
                    self.progress.policy_version,
                    len(self.pending_steps),
                )
                replay = True

    def _overtake_published(self) -> None:
        """After a restore behind the weights the engines run -- a learner that died after
        publishing steps its last checkpoint does not have -- send the restored weights at
        once, as a version newer than any of those (engines refuse older versions, and the
        groups they sampled must not look newer than the learner). The dead learner may have
        been sending ``published + 1`` to some engines when it died: the restored weights
        are ``published + 2``. Policy versions then run ahead of steps."""
        published = published_weights.published_version(self.bus, self.job)
        if published <= self.version:
            return
        restored = self.version
        self._skipped_versions += published + 2 - restored
        self.progress.policy_version = published + 2
        log.warning(
            "job %s: restored policy version %d, but the engines have run version %d (steps trained "
            "after the last checkpoint, lost with the learner that trained them); sending the "
            "restored weights as version %d",
            self.job,
            restored,
            published,
            self.version,
        )
        self._publish(self.version)
        self.events.publish(
            WeightsUpdated(job_id=self.job, policy_version=self.version, step=self.counters.steps)
        )

    def _publish(self, version: int) -> None:
        """Send weights ``version`` to the engines; a receiver that died before confirming (a
        replica being replaced) is sent them again, with backoff, for ``publish_retry_s``."""
        deadline = time.monotonic() + self.cfg.publish_retry_s
        delay = 1.0
        while True:
            published_weights.take_resend_request(self.bus, self.job)  # this update answers it
            try:
                self._retrying(lambda: self.backend.publish(version))
                published_weights.record_published(self.bus, self.job, version)
                return
            except ReceiverUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise ReceiverUnavailable(
                        f"gave up resending weights version {version} after {self.cfg.publish_retry_s:.0f}s "
                        f"(publish_retry_s): {exc}"
                    ) from exc
                log.warning("job %s: %s; resending in %.0fs", self.job, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    def _record_timeline(self, spans: dict[str, list[tuple[float, float]]]) -> None:
        """One JSON line per step: every stage's spans for it (``distil.timeline`` reads them)."""
        if self.timeline is None:
            return
        self.timeline.parent.mkdir(parents=True, exist_ok=True)
        with self.timeline.open("a") as f:
            f.write(json.dumps({"step": self.counters.steps, "spans": spans}) + "\n")

    def _train(self, samples: list, rewards: list[float]) -> dict[str, float]:
        return self._retrying(lambda: self.backend.step(samples, rewards))

    def checkpoint(self) -> str:
        """Save, then acknowledge every group the checkpoint now covers."""

        def save() -> str:
            last = self.pending[-1].entry_id if self.pending else ""
            self.progress.bus_positions["scored_acked_through"] = last
            return self.backend.save_checkpoint(self.progress)

        path = self._retrying(save)
        self._skipped_versions = 0  # the checkpoint has the version
        self.consumer.ack(self.pending)
        self.pending_steps = []
        self.events.publish(
            CheckpointWritten(
                job_id=self.job, step=self.counters.steps, policy_version=self.version, path=path
            )
        )
        return path

    def run(self, steps: int) -> StageCounters:
        """Train ``steps`` steps, checkpoint, report the job finished."""
        path = ""
        for _ in range(steps):
            self.step()
        if self.pending:
            path = self.checkpoint()
        self.events.publish(JobFinished(job_id=self.job, step=self.counters.steps, final_checkpoint=path))
        return self.counters


def _group_ids(batch: list[tuple[Delivery, list, list[float]]]) -> list[str]:
    return [d.group.group_id for d, _, _ in batch]
