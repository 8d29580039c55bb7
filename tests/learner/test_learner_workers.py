"""Training workers as Ray actors with FSDP2 over 2 gloo ranks: kill one mid-run, the group
restarts from the last checkpoint, retrains what it lost, and ends where an uninterrupted
single-process run ends."""

from __future__ import annotations

import os

import pytest
import ray
import torch
from safetensors.torch import load_file

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.config import TrainConfig
from services.learner.stage import LearnerStage, StageConfig
from services.learner.workers import TrainerGroup
from tests.learner.test_learner_stage import scored_group

TRAIN = TrainConfig(lr=1e-3, adam_eps=1e-6)
STAGE = StageConfig(groups_per_step=2, checkpoint_every=2, max_staleness=10)


def publish(bus, job, n=8):
    bus.producer(job, "scored").publish_many([scored_group(job, seed=100 + i) for i in range(n)])


def final_weights(ckpt_dir):
    latest = sorted(
        p for p in ckpt_dir.iterdir() if p.name.startswith("step-") and not p.name.endswith(".tmp")
    )[-1]
    return latest.name, load_file(latest / "model" / "model.safetensors")


@pytest.mark.slow
def test_killed_worker_group_restarts_from_checkpoint(ray_local, bus, tiny_model_dir, tmp_path):
    job_a, job_b = "straight-" + os.urandom(4).hex(), "killed-" + os.urandom(4).hex()
    publish(bus, job_a)
    publish(bus, job_b)

    local = LocalTrainer(tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path / "a")
    LearnerStage(bus, job_a, local, STAGE, consumer_name="a").run(steps=4)

    group = TrainerGroup(
        tiny_model_dir, ObjectiveConfig(), TRAIN, tmp_path / "b", world_size=2, timeout_s=600
    )
    stage = LearnerStage(bus, job_b, group, STAGE, consumer_name="b")
    for _ in range(3):
        stage.step()  # checkpoint after step 2; step 3 only in memory
    ray.kill(group.workers[1], no_restart=True)
    stage.run(steps=1)  # step 4 hits the dead worker: restart from step 2, retrain 3, then 4
    group.shutdown()
    assert stage.counters.worker_restarts == 1 and group.restarts == 1
    assert stage.counters.restored_versions == [2]  # back to the checkpoint of step 2
    assert stage.version == 4 and bus.backlog(job_b, "scored") == 0
    # The final weights' lineage: step 3 retrained in place of the lost one, every group once.
    lineage = stage.progress.trained_groups
    assert len(lineage) == 4 and len({g for step in lineage for g in step}) == 8
    assert lineage[2] == stage.counters.trained_group_ids[4:6]

    name_a, wa = final_weights(tmp_path / "a")
    name_b, wb = final_weights(tmp_path / "b")
    assert name_a == name_b == "step-00000004"
    for key, value in wa.items():
        torch.testing.assert_close(wb[key], value, rtol=1e-5, atol=1e-5)
