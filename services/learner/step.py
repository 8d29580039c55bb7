"""One optimisation step over a mini-batch of scored samples; objective-blind."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from distil.losses import (
    ObjectiveConfig,
    combine_metrics,
    compute_loss_from_logprobs,
    future_credits,
    group_advantages,
    group_credit_baseline,
    objective_class,
)
from services.learner.batching import TrainSample, collate, micro_batches, whole_group_batches
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

    def _plan(self, ordered: Sequence[TrainSample]) -> tuple[list[list[TrainSample]], int]:
        """This rank's micro-batches, and how many zero-weight passes pad them: ranks must run
        the same number of forward/backward passes (FSDP collectives)."""
        plans = [
            micro_batches(rank_share(ordered, Topology(r, self.topo.world_size)), self.train.token_budget)
            for r in range(self.topo.world_size)
        ]
        mine = plans[self.topo.rank]
        return mine, max(len(p) for p in plans) - len(mine)

    def _forward(self, batch):
        lb = batch.loss_batch
        return self.policy(
            batch.input_ids,
            batch.attention_mask,
            batch.predict_positions,
            lb.response_ids,
            lb.teacher_topk_ids if self.kind.needs_teacher else None,
            lb.rollout_temperature,
        )

    @torch.no_grad()
    def _with_credit_baselines(self, ordered: list[TrainSample]) -> list[TrainSample]:
        """credit_baseline="group_mean" over whole groups: a no-grad pass over the step's
        samples computes every sample's future credit (stop-gradient, so the same values the
        training pass gets), then each sample gets the leave-one-out mean of its siblings'
        credits per position. Micro-batches split groups (and ranks share them out), so a
        baseline from the micro-batch alone would see only the siblings packed with the
        sample, which depends on its own length: biased. Returns copies; the caller's
        samples are not modified."""
        mine, padding = self._plan(ordered)
        index = {id(s): i for i, s in enumerate(ordered)}
        width = max(max(len(s.response_ids) for s in ordered), 1)
        credit = torch.zeros(len(ordered), width, dtype=torch.float32, device=self.device)
        counted = torch.zeros_like(credit)
        for i, mb in enumerate(mine + [[ordered[0]]] * padding):
            batch = collate(mb, self.pad_id).to(self.device)
            student = self._forward(batch)  # every rank runs the same number of passes
            if i >= len(mine) or batch.loss_batch.teacher_topk_ids is None:
                continue  # padding pass, or no sample with a teacher signal: no credit
            c, m = future_credits(self.objective, student, batch.loss_batch)
            rows = torch.tensor([index[id(s)] for s in mb], device=self.device)
            credit[rows, : c.shape[1]] = c.float()
            counted[rows, : c.shape[1]] = m.float()
        if self.topo.distributed:
            import torch.distributed as dist

            dist.all_reduce(credit)  # each row is written by exactly one rank
            dist.all_reduce(counted)
        groups = torch.tensor([s.group_id for s in ordered], device=self.device)
        base = group_credit_baseline(credit, counted, groups).cpu().numpy()
        return [
            dataclasses.replace(s, credit_baseline=base[i, : len(s.response_ids)])
            for i, s in enumerate(ordered)
        ]

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
        plan = None
        if self.objective.credit_baseline == "group_mean" and self.objective.future_credit:
            # One rank whose budget takes whole groups: each micro-batch holds every sibling of
            # its samples, so the in-batch leave-one-out baseline is the whole-group one and the
            # no-grad pre-pass over the step (a fifth of the learner's time) is not needed.
            if not self.topo.distributed:
                plan = whole_group_batches(ordered, self.train.token_budget)
            if plan is None:
                ordered = self._with_credit_baselines(ordered)
        mine, padding = (plan, 0) if plan is not None else self._plan(ordered)
        self.optimizer.zero_grad(set_to_none=True)
        outputs = []
        loss_total = 0.0
        for i, mb in enumerate(mine + [[ordered[0]]] * padding):
            scale = 1.0 if i < len(mine) else 0.0
            batch = collate(mb, self.pad_id).to(self.device)
            lb = batch.loss_batch
            student = self._forward(batch)
            out = compute_loss_from_logprobs(self.objective, student, lb, normalizer=normalizer)
            (out.loss * scale).backward()
            if not scale:
                continue
            loss_total += float(out.loss.detach()) / self.topo.world_size
            outputs.append(dataclasses.replace(out, loss=out.loss.detach()))  # metrics; no graph kept
        t1 = time.perf_counter()
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.train.grad_clip)
        grad_norm = float(full_tensor(grad_norm))
        if self.topo.distributed:
            loss_total = _all_reduce_sum(loss_total, self.device)
        # Each mean over what it averages (ce_mean over teacher-scored tokens, not every
        # response token of its micro-batch), maxima maxed, counts summed.
        metrics = combine_metrics(outputs)
        metrics |= {"loss": loss_total, "grad_norm": grad_norm, "tokens": metrics.get("tokens", 0.0)}
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
