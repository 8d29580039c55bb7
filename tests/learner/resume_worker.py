"""One learner process for the kill-and-resume test.

modes: straight (run all steps), train (checkpoint every step; after --hang-after steps,
announce and wait to be killed), resume (continue from the latest checkpoint).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.checkpoint import CheckpointManager, Progress
from services.learner.config import TrainConfig
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner
from tests.learner.test_learner_step import samples


def main(mode: str, model_dir: str, root: str, steps: int, hang_after: int) -> None:
    torch.manual_seed(0)
    Path(root).mkdir(parents=True, exist_ok=True)
    ckpts = CheckpointManager(Path(root) / "ckpt", keep_last=2, tokenizer_dir=Path(model_dir))
    progress = Progress()
    start_dir = model_dir
    latest = ckpts.latest() if mode == "resume" else None
    if latest is not None:
        start_dir = str(latest / "model")
    model = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32)
    learner = Learner(
        PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(lr=1e-3, warmup_steps=2), pad_id=0
    )
    if latest is not None:
        progress = CheckpointManager.restore(latest, learner)
    losses = {}
    while progress.data_cursor.get("next_batch", 0) < steps:
        i = progress.data_cursor.get("next_batch", 0)
        losses[i] = learner.step(samples(n=5, seed=100 + i))["loss"]
        progress.data_cursor["next_batch"] = i + 1
        progress.policy_version += 1
        if mode == "train":
            ckpts.save(learner, progress)
            if i + 1 == hang_after:
                print("CHECKPOINTED", flush=True)
                time.sleep(600)
    torch.save(
        {
            "losses": losses,
            "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
            "ema": learner.ema.full_state_dict(),
            "rand": torch.rand(3),
            "version": progress.policy_version,
        },
        Path(root) / f"{mode}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
