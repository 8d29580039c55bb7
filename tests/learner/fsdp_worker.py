"""Entry point of one training rank for the distributed learner tests (spawned processes)."""

from __future__ import annotations

import sys

import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.config import TrainConfig
from services.learner.distributed import Topology, full_state_dict, init_distributed, shard_policy
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner
from tests.learner.test_learner_step import samples


# adam_eps above the float32 summation noise of gradients that are ~0: with eps=1e-8 Adam
# turns a 1e-9 difference in a vanishing gradient into a +-lr difference in the weight.
def run(
    rank: int, world_size: int, port: int, model_dir: str, out_path: str, steps: int, baseline: str = "none"
) -> None:
    torch.manual_seed(0)
    topo = init_distributed(rank, world_size, master_port=port) if world_size > 1 else Topology()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    policy = PolicyLogprobs(model, chunk_size=4)
    if topo.distributed:
        shard_policy(policy)
    learner = Learner(
        policy,
        ObjectiveConfig(credit_baseline=baseline),
        TrainConfig(lr=1e-3, token_budget=40, adam_eps=1e-6),
        pad_id=0,
        topology=topo,
    )
    losses = [learner.step(samples(n=7, seed=s))["loss"] for s in range(steps)]
    weights = full_state_dict(model)
    ema = learner.ema.full_state_dict()
    if rank == 0:
        torch.save({"losses": losses, "weights": weights, "ema": ema}, out_path)
    if topo.distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, model_dir, out, steps = sys.argv[1:7]
    run(int(rank), int(world), int(port), model_dir, out, int(steps), *sys.argv[7:8])
