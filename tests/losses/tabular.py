"""A tabular softmax policy on a small finite-horizon problem, for exact gradient checks.

Every state is a prefix of actions; the student has one free logit vector per state and
the teacher a fixed distribution per state. All trajectories can be enumerated.
"""

from __future__ import annotations

import itertools

import torch

from distil.losses import LossBatch


class Tabular:
    def __init__(self, vocab: int, horizon: int, seed: int = 0, topk: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.V, self.H = vocab, horizon
        self.topk = topk or vocab
        self.prefixes = [p for t in range(horizon) for p in itertools.product(range(vocab), repeat=t)]
        self.index = {p: i for i, p in enumerate(self.prefixes)}
        self.theta = (
            torch.randn(len(self.prefixes), vocab, generator=g, dtype=torch.float64) * 0.8
        ).requires_grad_()
        self.teacher_logp = torch.log_softmax(
            torch.randn(len(self.prefixes), vocab, generator=g, dtype=torch.float64) * 1.5, dim=-1
        )

    def trajectories(self):
        return list(itertools.product(range(self.V), repeat=self.H))

    def logits(self, y) -> torch.Tensor:
        return torch.stack([self.theta[self.index[tuple(y[:t])]] for t in range(self.H)])[None]  # [1,H,V]

    def log_prob(self, y, tau: float = 1.0) -> torch.Tensor:
        """log pi^tau(y): the policy at sampling temperature tau (softmax(theta / tau))."""
        return sum(
            torch.log_softmax(self.theta[self.index[tuple(y[:t])]] / tau, -1)[y[t]] for t in range(self.H)
        )

    def batch(self, ys, mask=None) -> LossBatch:
        ids = torch.tensor([list(y) for y in ys])
        top_lp, top_ids = [], []
        for y in ys:
            lp = torch.stack([self.teacher_logp[self.index[tuple(y[:t])]] for t in range(self.H)])
            v, i = lp.topk(self.topk, dim=-1)
            top_lp.append(v)
            top_ids.append(i)
        return LossBatch(
            response_ids=ids,
            response_mask=torch.ones(len(ys), self.H, dtype=torch.bool) if mask is None else mask,
            teacher_topk_ids=torch.stack(top_ids),
            teacher_topk_logprobs=torch.stack(top_lp),
        )

    def state_ce(self, prefix, *, tail: bool) -> torch.Tensor:
        """Cross-entropy H(teacher, student) at a state over the top-K(+tail) buckets, written out directly."""
        t = self.teacher_logp[self.index[prefix]].exp()
        s = torch.softmax(self.theta[self.index[prefix]], -1)
        ids = t.topk(self.topk).indices
        if self.topk == self.V:
            return -(t * s.log()).sum()
        tk, sk = t[ids], s[ids]
        if tail:
            return -(tk * sk.log()).sum() - (1 - tk.sum()) * torch.log(1 - sk.sum())
        tk, sk = tk / tk.sum(), sk / sk.sum()
        return -(tk * sk.log()).sum()
