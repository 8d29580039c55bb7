"""Checkpoints every N steps, keep the last M: the model in Hugging Face format (safetensors
that transformers and vLLM load) plus everything a resume needs: optimizer, scheduler, EMA
teacher, RNG states, step, policy version and the weights' lineage. In jobs the prompt cursor
is the gateway's (its job store), not the checkpoint's: see docs/learner.md."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from services.learner.lora import effective_weights, lora_layers
from services.learner.step import Learner

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass
class Progress:
    """Where the job is, besides the weights: saved and restored with every checkpoint."""

    policy_version: int = 0
    data_cursor: dict[str, Any] = field(default_factory=dict)  # for direct callers; jobs leave it empty
    bus_positions: dict[str, str] = field(default_factory=dict)  # written for inspection, not read back
    # The model's lineage: the group ids each step trained, in order, for every step these
    # weights went through (a step retrained after a restore replaces the lost one).
    trained_groups: list[list[str]] = field(default_factory=list)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class CheckpointManager:
    def __init__(self, root: Path, keep_last: int = 3, tokenizer_dir: Path | None = None):
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.root, self.keep_last, self.tokenizer_dir = Path(root), keep_last, tokenizer_dir

    def list(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and (p / "DONE").is_file())

    def latest(self) -> Path | None:
        done = self.list()
        return done[-1] if done else None

    def save(self, learner: Learner, progress: Progress) -> Path | None:
        """Write ``step-XXXXXXXX/`` atomically (a collective under FSDP2: call on every rank).

        Returns the directory on rank 0, ``None`` on other ranks.
        """
        model = learner.policy.model
        model_sd = get_model_state_dict(model, options=_FULL)
        optim_sd = get_optimizer_state_dict(learner.policy, learner.optimizer, options=_FULL)
        ema_sd = learner.ema.checkpoint_state()
        lora = bool(lora_layers(model))
        # with LoRA, the merged model for users and engines (plus the adapters to resume from)
        merged = effective_weights(model) if lora else None
        if learner.topo.rank != 0:
            return None
        final = self.root / f"step-{learner.state.step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "model").mkdir(parents=True)
        if merged is not None:
            torch.save({k: v for k, v in model_sd.items() if ".lora_" in k}, tmp / "adapter.pt")
        hf_sd = merged if merged is not None else model_sd
        model.save_pretrained(tmp / "model", state_dict=hf_sd, safe_serialization=True)
        if self.tokenizer_dir is not None:
            for f in self.tokenizer_dir.iterdir():
                if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
                    shutil.copy2(f, tmp / "model" / f.name)
        torch.save(
            {
                "optimizer": optim_sd,
                "scheduler": learner.scheduler.state_dict(),
                "ema": ema_sd,
                "rng": _rng_state(),
                "learner_state": {
                    "step": learner.state.step,
                    "skipped_nonfinite": learner.state.skipped_nonfinite,
                },
            },
            tmp / "trainer_state.pt",
        )
        (tmp / "progress.json").write_text(json.dumps(progress.__dict__, indent=2))
        (tmp / "DONE").write_text("ok\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.list()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def restore(path: Path, learner: Learner) -> Progress:
        """Restore optimizer, scheduler, EMA, RNG and counters into a learner whose model was
        loaded from ``path / "model"`` (call on every rank)."""
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        set_optimizer_state_dict(learner.policy, learner.optimizer, state["optimizer"], options=_FULL)
        learner.scheduler.load_state_dict(state["scheduler"])
        learner.ema.load_checkpoint_state(state["ema"])
        learner.state.step = state["learner_state"]["step"]
        learner.state.skipped_nonfinite = state["learner_state"]["skipped_nonfinite"]
        _set_rng_state(state["rng"])
        return Progress(**json.loads((path / "progress.json").read_text()))
