"""One optimisation step over a mini-batch of scored samples; objective-blind."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from distil.losses import ObjectiveConfig, compute_loss_from_logprobs, group_advantages, objective_class
from services.learner.batching import TrainSample, collate, micro_batches
from services.learner.config import TrainConfig
from services.learner.distributed import Topology, full_tensor, rank_share
from services.learner.ema import make_ema
from services.learner.policy import PolicyLogprobs


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` steps in a row had a non-finite loss or gradient."""


@dataclass
class LearnerState:
    step: int = 0
    skipped_nonfinite: int = 0
    nonfinite_in_a_row: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Learner:
    """AdamW with warmup-then-constant LR, gradient accumulation over token-budget
    micro-batches, clipping, non-finite step skipping, and the EMA teacher."""

    def __init__(
        self,
        policy: PolicyLogprobs,
        objective: ObjectiveConfig,
        train: TrainConfig,
        pad_id: int,
        topology: Topology | None = None,
    ):
        """``policy`` must already be sharded (``shard_policy``) when ``topology`` has several ranks."""
        self.policy, self.objective, self.train, self.pad_id = policy, objective, train, pad_id
        self.topo = topology or Topology()
        self.device = next(policy.parameters()).device
        self.kind = objective_class(objective.name)
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad],  # LoRA: the adapters only
            lr=train.lr,
            weight_decay=train.weight_decay,
            betas=train.adam_betas,
            eps=train.adam_eps,
        )
        warm = train.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.ema = make_ema(policy.model, train.teacher_ema_rate)
        self.state = LearnerState()

    def _normalizer(self, samples: Sequence[TrainSample]) -> float:
        counted = [s for s in samples if s.teacher_mask or not self.kind.needs_teacher]
        if self.objective.aggregation == "seq_mean":
            return float(sum(1 for s in counted if len(s.response_ids)))
        return float(sum(len(s.response_ids) for s in counted))

    def step(
        self, samples: Sequence[TrainSample], rewards: Sequence[float] | None = None
    ) -> dict[str, float]:
        if not samples:
            raise ValueError("a training step needs at least one sample")
        t0 = time.perf_counter()
        if self.kind.needs_advantages:
            if rewards is None:
                raise ValueError(
                    f"objective {self.objective.name!r} needs rewards to compute group advantages"
                )
            adv = group_advantages(
                torch.tensor(rewards, dtype=torch.float64), torch.tensor([s.group_id for s in samples])
            )
            for s, a in zip(samples, adv.tolist(), strict=True):
                s.advantage = a
        # Every rank sees the whole mini-batch: the normaliser is global, each rank trains on
        # its share, and FSDP's gradient averaging over ranks is undone by dividing by W here.
        normalizer = max(self._normalizer(samples), 1.0) / self.topo.world_size
        ordered = sorted(samples, key=lambda s: s.length, reverse=True)
        plans = [
            micro_batches(rank_share(ordered, Topology(r, self.topo.world_size)), self.train.token_budget)
            for r in range(self.topo.world_size)
        ]
        mine = plans[self.topo.rank]
        # Ranks must run the same number of forward/backward passes (FSDP collectives):
        # pad with zero-weight passes over the first sample.
        padding = max(len(p) for p in plans) - len(mine)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}  # per metric: a micro-batch without it (no teacher) adds no weight
        tokens = 0.0
        loss_total = 0.0
        for i, mb in enumerate(mine + [[ordered[0]]] * padding):
            scale = 1.0 if i < len(mine) else 0.0
            batch = collate(mb, self.pad_id).to(self.device)
            lb = batch.loss_batch
            student = self.policy(
                batch.input_ids,
                batch.attention_mask,
                batch.predict_positions,
                lb.response_ids,
                lb.teacher_topk_ids if self.kind.needs_teacher else None,
                lb.rollout_temperature,
            )
            out = compute_loss_from_logprobs(self.objective, student, lb, normalizer=normalizer)
            (out.loss * scale).backward()
            if not scale:
                continue
            loss_total += float(out.loss.detach()) / self.topo.world_size
            weight = out.metrics["tokens"]
            tokens += weight
            for k, v in out.metrics.items():
                if k not in ("loss", "tokens"):
                    sums[k] = sums.get(k, 0.0) + v * weight  # token-weighted means over micro-batches
                    weights[k] = weights.get(k, 0.0) + weight
        t1 = time.perf_counter()
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.train.grad_clip)
        grad_norm = float(full_tensor(grad_norm))
        if self.topo.distributed:
            loss_total = _all_reduce_sum(loss_total, self.device)
        metrics = {k: v / max(weights[k], 1.0) for k, v in sums.items()}
        metrics |= {"loss": loss_total, "grad_norm": grad_norm, "tokens": tokens}
        if not (math.isfinite(grad_norm) and math.isfinite(loss_total)):
            self.optimizer.zero_grad(set_to_none=True)
            self.state.skipped_nonfinite += 1
            self.state.nonfinite_in_a_row += 1
            metrics["skipped_nonfinite"] = float(self.state.skipped_nonfinite)
            if self.state.nonfinite_in_a_row >= self.train.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{self.state.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient "
                    f"(last loss {loss_total}, grad norm {grad_norm}); lower the learning rate or check the data"
                )
            return metrics
        lr = self.optimizer.param_groups[0]["lr"]  # this step's (the scheduler moves on to the next)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.policy.model)
        t2 = time.perf_counter()
        self.state.step += 1
        self.state.nonfinite_in_a_row = 0
        metrics |= {
            "step": float(self.state.step),
            "lr": lr,
            "skipped_nonfinite": float(self.state.skipped_nonfinite),
            "time_forward_backward": t1 - t0,
            "time_optimizer": t2 - t1,
            "tokens_per_s": metrics["tokens"] / max(t2 - t0, 1e-9),
        }
        self.state.history.append(metrics)
        return metrics


def _all_reduce_sum(value: float, device: torch.device) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)  # NCCL reduces GPU tensors only
    dist.all_reduce(t)
    return float(t)
