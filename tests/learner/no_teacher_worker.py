"""One training rank for test_learner_no_teacher's FSDP padding-pass test (spawned processes).

Three samples, the longest without a teacher signal, a token budget of one sample per
micro-batch: on 2 ranks rank 0 gets the longest and the shortest (2 micro-batches), rank 1
the middle one (1 micro-batch), so rank 1 pads with a zero-weight pass over the longest.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.config import TrainConfig
from services.learner.distributed import Topology, full_state_dict, init_distributed, shard_policy
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner
from tests.learner.test_learner_step import samples


def mini_batch(drop: bool):
    ss = sorted(samples(n=3, seed=4), key=lambda s: s.length, reverse=True)
    assert ss[0].length > ss[1].length > ss[2].length
    ss[0] = dataclasses.replace(ss[0], teacher_topk_ids=None, teacher_topk_logprobs=None, teacher_mask=False)
    return ss[1:] if drop else ss


def run(rank: int, world_size: int, port: int, model_dir: str, out_path: str, drop: bool) -> None:
    torch.manual_seed(0)
    topo = init_distributed(rank, world_size, master_port=port) if world_size > 1 else Topology()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    policy = PolicyLogprobs(model, chunk_size=4)
    if topo.distributed:
        shard_policy(policy)
    learner = Learner(
        policy,
        ObjectiveConfig(),
        TrainConfig(lr=1e-3, token_budget=1, adam_eps=1e-6),
        pad_id=0,
        topology=topo,
    )
    loss = learner.step(mini_batch(drop))["loss"]
    weights = full_state_dict(model)
    if rank == 0:
        torch.save({"loss": loss, "weights": weights}, out_path)
    if topo.distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, model_dir, out, drop = sys.argv[1:7]
    run(int(rank), int(world), int(port), model_dir, out, bool(int(drop)))
