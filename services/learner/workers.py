"""A group of Ray actors, one per training rank, running FSDP2 together.

``TrainerGroup`` is a ``TrainerBackend``: the stage drives it exactly like a local
trainer. When a worker dies, the whole group is restarted from the last checkpoint and
``WorkerGroupRestarted`` tells the stage to retrain the steps since that checkpoint.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from distil.losses import ObjectiveConfig
from services.learner.batching import TrainSample
from services.learner.checkpoint import Progress
from services.learner.config import TrainConfig

log = logging.getLogger(__name__)


class WorkerGroupRestarted(RuntimeError):
    """The training workers were restarted from the last checkpoint (``progress``)."""

    def __init__(self, progress: Progress | None, cause: BaseException):
        super().__init__(f"training workers restarted from the last checkpoint after: {cause}")
        self.progress = progress


@ray.remote
class TrainWorker:
    def __init__(self, rank: int, world: int, port: int, kwargs: dict):
        from services.learner.backend import LocalTrainer
        from services.learner.distributed import Topology, init_distributed

        topo = init_distributed(rank, world, master_port=port) if world > 1 else Topology()
        self.trainer = LocalTrainer(topology=topo, **kwargs)

    def vocab_size(self) -> int:
        return self.trainer.vocab_size

    def resume(self) -> Progress | None:
        return self.trainer.resume()

    def step(self, samples, rewards) -> dict[str, float]:
        return self.trainer.step(samples, rewards)

    def save_checkpoint(self, progress: Progress) -> str:
        return self.trainer.save_checkpoint(progress)

    def publish(self, version: int) -> list:
        return self.trainer.publish(version)

    def pid(self) -> int:
        import os

        return os.getpid()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrainerGroup:
    def __init__(
        self,
        model_dir: Path,
        objective: ObjectiveConfig,
        train: TrainConfig,
        checkpoint_dir: Path,
        *,
        transport=None,
        world_size: int = 1,
        keep_last: int = 3,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        timeout_s: float = 1800.0,
    ):
        self.kwargs = dict(
            model_dir=Path(model_dir),
            objective=objective,
            train=train,
            checkpoint_dir=Path(checkpoint_dir),
            keep_last=keep_last,
            transport=transport,
        )
        self.world_size, self.timeout_s = world_size, timeout_s
        self.options = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        port = _free_port()
        self.workers = [
            TrainWorker.options(**self.options).remote(r, self.world_size, port, self.kwargs)
            for r in range(self.world_size)
        ]
        self.vocab_size = self._all("starting the training workers", lambda w: w.vocab_size.remote())[0]

    def _all(self, what: str, call):
        refs = [call(w) for w in self.workers]
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except GetTimeoutError as exc:
            raise TimeoutError(
                f"{what}: no answer from {self.world_size} training workers in {self.timeout_s}s"
            ) from exc

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)

    def _restart(self, cause: BaseException) -> WorkerGroupRestarted:
        log.warning("a training worker died (%s); restarting the group from the last checkpoint", cause)
        self.shutdown()
        self.restarts += 1
        self._start()
        return WorkerGroupRestarted(self.resume(), cause)

    def resume(self) -> Progress | None:
        return self._all("restoring the last checkpoint", lambda w: w.resume.remote())[0]

    def step(self, samples: Sequence[TrainSample], rewards: Sequence[float]) -> dict[str, float]:
        samples_ref, rewards_ref = ray.put(list(samples)), ray.put(list(rewards))
        try:
            return self._all("training a step", lambda w: w.step.remote(samples_ref, rewards_ref))[0]
        except RayActorError as exc:
            raise self._restart(exc) from exc

    def save_checkpoint(self, progress: Progress) -> str:
        try:
            return self._all("writing a checkpoint", lambda w: w.save_checkpoint.remote(progress))[0]
        except RayActorError as exc:
            raise self._restart(exc) from exc

    def publish(self, version: int) -> list:
        try:
            return self._all("publishing weights", lambda w: w.publish.remote(version))[0]
        except RayActorError as exc:
            raise self._restart(exc) from exc
