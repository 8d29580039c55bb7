"""One training rank of the LoRA + FSDP2 tests (spawned processes, one per rank).

modes: ``train`` (two steps, publish, checkpoint, a third step) and ``resume`` (restore
that checkpoint, then the third step). Rank 0 writes what it saw to ``out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distil.losses import ObjectiveConfig
from services.learner.backend import LocalTrainer
from services.learner.checkpoint import Progress
from services.learner.config import TrainConfig
from services.learner.distributed import Topology, full_state_dict, init_distributed
from services.learner.lora import LoraSettings
from tests.learner.recording import RecordingTransport
from tests.learner.test_learner_step import samples

# lr and adam_eps as in fsdp_worker.py: Adam's first steps turn a gradient g into about
# lr * g / (|g| + eps), so float32 summation noise in a ~0 gradient (lora_A's, while B is
# still ~0) moves a weight by up to lr/eps times that noise: at lr 1e-2 one element of 256
# differed by 3e-5 between 1 and 2 ranks (the losses by 1e-7).
TRAIN = TrainConfig(
    lr=1e-3,
    token_budget=40,
    adam_eps=1e-6,
    teacher_ema_rate=0.25,
    logits_chunk=4,
    lora=LoraSettings(r=4, alpha=8),
)
N = 7


def step(trainer: LocalTrainer, seed: int) -> float:
    return trainer.step(samples(n=N, seed=seed), [0.0] * N)["loss"]


def run(mode: str, rank: int, world: int, port: int, model_dir: str, root: str, out: str) -> None:
    topo = init_distributed(rank, world, master_port=port) if world > 1 else Topology()
    transport = RecordingTransport()
    trainer = LocalTrainer(
        Path(model_dir), ObjectiveConfig(), TRAIN, Path(root), topology=topo, transport=transport
    )
    result: dict = {}
    if mode == "train":
        result["losses"] = [step(trainer, s) for s in (0, 1)]
        trainer.publish(2)
        if rank == 0:
            student, teacher = transport.sent
            result |= {
                "kinds": (student.kind, teacher.kind),
                "adapter": student.tensors,
                "lora_config": student.lora_config,
                "teacher": teacher.tensors,
                "probes": (student.probe.expected_logprobs, teacher.probe.expected_logprobs),
            }
        result["checkpoint"] = trainer.save_checkpoint(Progress(policy_version=2))
    else:
        result["progress"] = trainer.resume()
    result["next_loss"] = step(trainer, 2)
    # every rank joins the gathers; rank 0 keeps them
    result["params"] = {n: t.clone() for n, t in full_state_dict(trainer.learner.policy.model).items()}
    result["ema"] = trainer.learner.ema.checkpoint_state()
    if rank == 0:
        torch.save(result, out)
    if topo.distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    mode, rank, world, port, model_dir, root, out = sys.argv[1:8]
    run(mode, int(rank), int(world), int(port), model_dir, root, out)
