"""Evaluation metrics over n samples per problem: avg@k, unbiased pass@k, maj@k, best@k.

Each takes one problem's n sampled results; ``summarize`` averages over problems. For
code, "score" is 1 when all tests pass and "accuracy" the fraction of tests passed (as in
LiveCodeBench); pass a per-sample list of either to the same functions.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from math import comb

# Above this many k-subsets, maj@k is estimated from this many random subsets (seeded).
_MAJ_EXACT_LIMIT = 20_000
_MAJ_SAMPLES = 5_000


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of samples n={n}")


def avg_at_k(scores: Sequence[float]) -> float:
    """Mean score over the samples (avg@k with k = number of samples)."""
    if not scores:
        raise ValueError("avg@k needs at least one sample")
    return sum(scores) / len(scores)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n-c, k) / C(n, k) for c correct samples out of n."""
    _check_k(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} correct samples must be between 0 and n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def best_at_k(scores: Sequence[float], k: int) -> float:
    """Expected maximum score of a random k-subset of the samples (unbiased; = pass@k for 0/1)."""
    n = len(scores)
    _check_k(n, k)
    ordered = sorted(scores)
    total = comb(n, k)
    # The i-th smallest (1-based) is the max of exactly C(i-1, k-1) subsets.
    return sum(s * comb(i, k - 1) for i, s in enumerate(ordered) if i >= k - 1) / total


def majority_score(keys: Sequence[Hashable | None], scores: Sequence[float]) -> float:
    """The score that majority voting over these samples earns.

    ``keys[i]`` is sample i's answer as its verifier extracted it (``Grade.answer_key``:
    the normalised final answer, the chosen letter, for code a digest of the behaviour on
    the tests), so samples that give the same answer in different words vote together;
    ``None`` means no answer was found and the sample does not vote. The answer with the
    most votes wins; among answers tied for the most votes, the one whose samples have the
    highest mean score wins (issue #22 item 7; this reads the scores, so a tie counts as
    the best of the tied answers, not a coin flip). The result is the winner's mean score (its
    samples share one answer, so for a verifier's score they share one value). If no sample
    votes, the result is the mean score of all of them (0 when "no answer" scores 0).
    Independent of the samples' order.
    """
    if len(keys) != len(scores):
        raise ValueError(f"keys has {len(keys)} entries but scores has {len(scores)}")
    if not scores:
        raise ValueError("majority voting needs at least one sample")
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for key, score in zip(keys, scores, strict=True):
        if key is not None:
            groups[key].append(score)
    if not groups:
        return sum(scores) / len(scores)
    top = max(len(v) for v in groups.values())
    # Most votes, then the highest mean score; answers equal on both give the same result.
    return max(sum(v) / len(v) for v in groups.values() if len(v) == top)


def maj_at_k(answers: Sequence[Hashable | None], scores: Sequence[float], k: int, *, seed: int = 0) -> float:
    """Expected ``majority_score`` of a random k-subset of the samples.

    ``answers`` are the samples' answer keys (``None``: no answer, no vote); ``scores``
    their scores. Exact over all subsets when there are at most 20,000 of them, else a
    seeded Monte-Carlo estimate over 5,000 subsets.
    """
    n = len(answers)
    if len(scores) != n:
        raise ValueError(f"answers has {n} entries but scores has {len(scores)}")
    _check_k(n, k)
    if comb(n, k) <= _MAJ_EXACT_LIMIT:
        subsets = list(itertools.combinations(range(n), k))
    else:
        rng = random.Random(seed)
        subsets = [sorted(rng.sample(range(n), k)) for _ in range(_MAJ_SAMPLES)]
    total = sum(majority_score([answers[i] for i in s], [scores[i] for i in s]) for s in subsets)
    return total / len(subsets)


@dataclass(frozen=True)
class ProblemResult:
    """One problem's n samples: score (all tests pass), accuracy (fraction passed), answer
    keys for maj@k (``Grade.answer_key``; ``None`` for a sample without an answer)."""

    scores: Sequence[float]
    accuracies: Sequence[float] | None = None
    answers: Sequence[Hashable | None] | None = None


def summarize(problems: Sequence[ProblemResult], ks: Sequence[int]) -> dict[str, float]:
    """Mean over problems of avg@n, pass@k, best@k and maj@k (score and accuracy variants)."""
    if not problems:
        raise ValueError("summarize needs at least one problem")
    out: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    for p in problems:
        n = len(p.scores)
        add("score/avg", avg_at_k(p.scores))
        if p.accuracies is not None:
            add("accuracy/avg", avg_at_k(p.accuracies))
        for k in ks:
            if k > n:
                continue
            add(f"score/pass@{k}", pass_at_k(n, sum(1 for s in p.scores if s >= 1.0), k))
            add(f"score/best@{k}", best_at_k(p.scores, k))
            if p.accuracies is not None:
                add(f"accuracy/best@{k}", best_at_k(p.accuracies, k))
            if p.answers is not None:
                add(f"score/maj@{k}", maj_at_k(p.answers, p.scores, k))
                if p.accuracies is not None:
                    add(f"accuracy/maj@{k}", maj_at_k(p.answers, p.accuracies, k))
    return {key: sum(v) / len(v) for key, v in out.items()}
