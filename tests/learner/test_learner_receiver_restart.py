"""A weight receiver that dies while taking an update (a Serve replica being replaced, an
actor restarted by Ray) does not fail the learner: the stage sends the weights again until
the replacement confirms them."""

from __future__ import annotations

import os
import signal
import threading

import ray

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.config import TrainConfig
from services.learner.stage import LearnerStage, StageConfig
from tests.learner.test_learner_stage import scored_group


@ray.remote(max_restarts=1)
class SlowReceiver:
    """Takes a weight update slowly (long enough to be killed in the middle of it)."""

    def pid(self) -> int:
        return os.getpid()

    def update_weights(self, tensors, version, probe):
        import time

        time.sleep(3.0)
        return {"version": version, "pid": os.getpid(), "tensors": len(tensors)}


def test_weights_are_resent_to_a_receiver_that_died_taking_them(
    ray_local, bus, job_id, tiny_model_dir, tmp_path
):
    from services.learner.publish import RayObjectStoreTransport

    receiver = SlowReceiver.remote()
    first_pid = ray.get(receiver.pid.remote(), timeout=120)
    transport = RayObjectStoreTransport({"student": [receiver]}, timeout_s=120)
    trainer = LocalTrainer(
        tiny_model_dir, ObjectiveConfig(), TrainConfig(lr=1e-3), tmp_path, transport=transport
    )
    stage = LearnerStage(bus, job_id, trainer, StageConfig(groups_per_step=2, publish_retry_s=120))
    bus.producer(job_id, "scored").publish_many([scored_group(job_id, seed=s) for s in (1, 2)])

    # SIGKILL the receiver 1 s into the step's weight update (the update takes 3 s).
    results: list = []
    original = trainer.publish

    def publish(version):
        if not results:  # the first attempt only
            threading.Timer(1.0, os.kill, (first_pid, signal.SIGKILL)).start()
        results.append(None)
        results[-1] = original(version)
        return results[-1]

    trainer.publish = publish
    stage.step()
    assert stage.version == 1 and len(results) == 2  # the first attempt died with the receiver
    # The update that reached the receiver is the resent one, taken by its restarted process.
    (confirmed,) = results[-1]
    assert confirmed["version"] == 1 and confirmed["pid"] != first_pid and confirmed["tensors"] > 0
    ray.kill(receiver, no_restart=True)


@ray.remote
class RecordingReceiver:
    def __init__(self):
        self.versions: list[int] = []

    def update_weights(self, tensors, version, probe):
        self.versions.append(version)
        return version

    def seen(self) -> list[int]:
        return self.versions


def test_an_engine_that_asks_gets_the_weights_while_the_learner_waits(
    ray_local, bus, job_id, tiny_model_dir, tmp_path
):
    """A replacement engine (see distil.bus.weights) asks for the job's weights; the learner,
    waiting for the next step's groups, sends them instead of waiting on groups that the
    engine would otherwise sample from its initial weights."""
    import time

    from distil.bus import weights
    from services.learner.publish import RayObjectStoreTransport

    receiver = RecordingReceiver.remote()
    transport = RayObjectStoreTransport({"student": [receiver]}, timeout_s=120)
    trainer = LocalTrainer(
        tiny_model_dir, ObjectiveConfig(), TrainConfig(lr=1e-3), tmp_path, transport=transport
    )
    stage = LearnerStage(bus, job_id, trainer, StageConfig(groups_per_step=2))
    producer = bus.producer(job_id, "scored")
    producer.publish_many([scored_group(job_id, seed=s) for s in (1, 2)])
    stage.step()
    assert ray.get(receiver.seen.remote(), timeout=60) == [1] and weights.published_version(bus, job_id) == 1

    weights.request_resend(bus, job_id)  # what a restarted rollout or teacher replica does
    waiting = threading.Thread(target=stage.step)
    waiting.start()  # no groups yet: the learner waits for them, and answers the request meanwhile
    deadline = time.monotonic() + 60
    while ray.get(receiver.seen.remote(), timeout=60) != [1, 1]:
        assert time.monotonic() < deadline, ray.get(receiver.seen.remote(), timeout=60)
        time.sleep(0.2)
    producer.publish_many([scored_group(job_id, 1, seed=s) for s in (3, 4)])
    waiting.join(timeout=120)
    assert stage.version == 2 and ray.get(receiver.seen.remote(), timeout=60) == [1, 1, 2]
    assert weights.published_version(bus, job_id) == 2 and not weights.take_resend_request(bus, job_id)
    ray.kill(receiver)
