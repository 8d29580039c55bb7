"""Where training steps run: in this process (``LocalTrainer``), or in a group of Ray
actors with FSDP2 (``services.learner.workers.TrainerGroup``). The stage drives either
through the same three calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from distil.losses import ObjectiveConfig
from services.learner.batching import TrainSample
from services.learner.checkpoint import CheckpointManager, Progress
from services.learner.config import TrainConfig
from services.learner.device import configure_threads, train_device
from services.learner.distributed import Topology, full_state_dict
from services.learner.lora import apply_lora, effective_weights, lora_layers, peft_adapter
from services.learner.policy import training_policy
from services.learner.publish import WeightTransport, WeightUpdate, make_probe, probe_skeleton
from services.learner.step import Learner

# A short fixed text whose log-probs every receiver checks after loading new weights.
PROBE_TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"


class TrainerBackend(Protocol):
    vocab_size: int

    def step(self, samples: Sequence[TrainSample], rewards: Sequence[float]) -> dict[str, float]: ...

    def save_checkpoint(self, progress: Progress) -> str: ...

    def resume(self) -> Progress | None: ...

    def publish(self, version: int) -> list: ...


class LocalTrainer:
    """One rank of training: the model, the learner and its checkpoints.

    With a ``topology`` of several ranks (inside a worker actor) the policy is sharded
    with FSDP2; every rank must then make the same calls.
    """

    def __init__(
        self,
        model_dir: Path,
        objective: ObjectiveConfig,
        train: TrainConfig,
        checkpoint_dir: Path,
        keep_last: int = 3,
        topology: Topology | None = None,
        transport: WeightTransport | None = None,
        probe_text: str = PROBE_TEXT,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.topo = topology or Topology()
        self.transport = transport
        self.checkpoints = CheckpointManager(
            checkpoint_dir, keep_last=keep_last, tokenizer_dir=Path(model_dir)
        )
        self._latest = self.checkpoints.latest()
        # Full fine-tuning resumes from the checkpoint's model; LoRA from the base plus the adapters.
        lora = train.lora
        source = self._latest / "model" if self._latest is not None and lora is None else Path(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        )
        self.threads = configure_threads(train.cpu_threads, self.topo)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        model.to(train_device(self.topo))  # fp32 master weights on the rank's GPU (or the CPU)
        if lora is not None:
            _, model = apply_lora(model, lora)
            if self._latest is not None:
                adapters = torch.load(self._latest / "adapter.pt", weights_only=True)
                result = model.load_state_dict(adapters, strict=False)
                if result.unexpected_keys:
                    raise ValueError(
                        f"checkpoint adapters do not fit this LoRA config: {result.unexpected_keys[:3]}"
                    )
        self.vocab_size = model.config.vocab_size
        self.probe_ids = tokenizer.encode(probe_text, add_special_tokens=False)
        self._skeleton: torch.nn.Module | None = None  # built on first publish when sharded
        policy = training_policy(model, train, self.topo)
        self.learner = Learner(policy, objective, train, pad_id=pad_id, topology=self.topo)

    def resume(self) -> Progress | None:
        """Restore optimizer/EMA/RNG/progress from the checkpoint the model was loaded from."""
        if self._latest is None:
            return None
        return CheckpointManager.restore(self._latest, self.learner)

    def step(self, samples: Sequence[TrainSample], rewards: Sequence[float]) -> dict[str, float]:
        return self.learner.step(samples, rewards=rewards)

    def publish(self, version: int) -> list:
        """Send the student's weights (rollout) and the EMA teacher's (teacher) as ``version``,
        each with its probe. A collective under FSDP2; rank 0 sends.

        With LoRA the student goes as its adapter only (A/B + config); the teacher as merged
        full weights, since base + EMA(delta) is no fixed-rank adapter (see ``lora.py``)."""
        if self.transport is None:
            return []
        model = self.learner.policy.model
        lora = bool(lora_layers(model))
        # Gathers (collectives under FSDP2, so every rank joins) of HF-named full tensors.
        adapter = peft_adapter(model) if lora else None
        if not lora:
            student = full_state_dict(model)
        elif self.topo.distributed:  # merged, only to probe: the sharded peft model cannot probe itself
            student = effective_weights(model)
        else:
            student = None
        teacher = self.learner.ema.weights()
        if self.topo.rank != 0:
            return []
        if self.topo.distributed or lora:
            # probe full tensors on a plain skeleton (sharded, or peft names that differ from HF's)
            if self._skeleton is None:
                self._skeleton = probe_skeleton(model)
            buffers = dict(model.named_buffers())
            teacher_probe = make_probe(self._skeleton, self.probe_ids, teacher | buffers)
            if student is None:
                student_probe = make_probe(model, self.probe_ids)
            else:
                student_probe = make_probe(self._skeleton, self.probe_ids, student | buffers)
        else:
            student_probe = make_probe(model, self.probe_ids)
            teacher_probe = make_probe(model, self.probe_ids, teacher)
        if adapter is not None:
            results = self.transport.send(WeightUpdate.adapter("student", version, adapter, student_probe))
        else:
            assert student is not None
            results = self.transport.send(WeightUpdate("student", version, student, student_probe))
        results += self.transport.send(WeightUpdate("teacher", version, teacher, teacher_probe))
        return results

    def save_checkpoint(self, progress: Progress) -> str:
        path = self.checkpoints.save(self.learner, progress)
        return str(path) if path is not None else ""
