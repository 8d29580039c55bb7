"""Learner jobs inside the service: each runs a ``LearnerStage`` on a background thread."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distil.bus import Bus, BusConfig, JobFailed
from distil.losses import ObjectiveConfig
from distil.models import resolve_model
from distil.paths import data_dir
from services.learner.config import TrainConfig
from services.learner.stage import LearnerStage, StageConfig

log = logging.getLogger(__name__)

State = Literal["starting", "running", "completed", "failed", "stopped"]


class LearnerJobSpec(BaseModel):
    """What the learner needs of a job (the gateway derives it from the job spec)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    model: str = Field(description="Local HF dir, hub id, or 'smollm2-135m-instruct'.")
    steps: int = Field(ge=1)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stage: StageConfig = Field(default_factory=StageConfig)
    world_size: int = Field(default=1, ge=1, description="Training ranks (Ray actors, FSDP2).")
    gpus_per_rank: float = Field(
        default=0.0, ge=0, le=1, description="GPU share each rank's actor reserves; 0 = train on CPU."
    )
    checkpoint_dir: Path | None = Field(
        default=None, description="None = <data_dir>/jobs/<job_id>/checkpoints."
    )
    keep_last: int = Field(default=3, ge=1)


def _cluster_has_gpus() -> bool:
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


class LearnerJob:
    def __init__(self, spec: LearnerJobSpec, bus_config: BusConfig, transport=None):
        self.spec, self.bus_config, self.transport = spec, bus_config, transport
        self.state: State = "starting"
        self.error = ""
        self.last_metrics: dict[str, float] = {}
        self.stage: LearnerStage | None = None
        self.started_at = time.time()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"learner-{spec.job_id}", daemon=True)
        self.thread.start()

    def status(self) -> dict:
        s = self.stage
        return {
            "job_id": self.spec.job_id,
            "state": self.state,
            "error": self.error,
            "steps": s.counters.steps if s else 0,
            "policy_version": s.version if s else 0,
            "groups_trained": s.counters.groups_trained if s else 0,
            "dropped_stale": s.counters.dropped_stale if s else 0,
            "rejected_groups": s.counters.rejected if s else 0,
            "worker_restarts": s.counters.worker_restarts if s else 0,
            "metrics": self.last_metrics,
        }

    def stop(self) -> None:
        self._stop.set()

    def _backend(self):
        spec = self.spec
        model_dir = resolve_model(spec.model)
        ckpt = spec.checkpoint_dir or data_dir() / "jobs" / spec.job_id / "checkpoints"
        args = (model_dir, spec.objective, spec.train, ckpt)
        kwargs = {"keep_last": spec.keep_last, "transport": self.transport}
        gpus = spec.gpus_per_rank
        if gpus and not _cluster_has_gpus():
            log.warning("job %s: the Ray cluster has no GPUs; its training ranks run on CPU", spec.job_id)
            gpus = 0.0
        if spec.world_size == 1 and gpus == 0:
            from services.learner.backend import LocalTrainer

            return LocalTrainer(*args, **kwargs)
        from services.learner.workers import TrainerGroup

        # GPU ranks run as actors that reserve their GPU share, so Ray places them on GPUs
        # no engine holds (this replica reserves none), even a single rank.
        return TrainerGroup(*args, world_size=spec.world_size, gpus_per_worker=gpus, **kwargs)

    def _on_step(self, version: int, metrics: dict[str, float]) -> None:
        self.last_metrics = dict(metrics)

    def _run(self) -> None:
        bus = Bus(self.bus_config)
        try:
            self.stage = LearnerStage(
                bus,
                self.spec.job_id,
                self._backend(),
                self.spec.stage,
                on_step=self._on_step,
                timeline=data_dir() / "jobs" / self.spec.job_id / "timeline.jsonl",
            )
            self.state = "running"
            while self.stage.counters.steps < self.spec.steps and not self._stop.is_set():
                self.stage.step()
            if self._stop.is_set():
                if self.stage.pending:
                    self.stage.checkpoint()
                self.state = "stopped"
            else:
                self.stage.run(steps=0)  # final checkpoint + JobFinished
                self.state = "completed"
        except Exception as exc:
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("learner job %s failed:\n%s", self.spec.job_id, traceback.format_exc())
            try:
                steps = self.stage.counters.steps if self.stage else 0
                bus.producer(self.spec.job_id, "events").publish(
                    JobFailed(job_id=self.spec.job_id, step=steps, error=self.error)
                )
            except Exception:  # the bus itself may be what failed
                log.exception("could not report the failure of job %s on the bus", self.spec.job_id)
        finally:
            bus.close()
