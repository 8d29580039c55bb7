from __future__ import annotations

import itertools
from math import comb

import pytest

from distil.metrics import ProblemResult, avg_at_k, best_at_k, maj_at_k, pass_at_k, summarize


def brute(values, k, fn):
    subsets = list(itertools.combinations(range(len(values)), k))
    return sum(fn([values[i] for i in s]) for s in subsets) / len(subsets)


def test_pass_at_k_is_the_subset_average():
    scores = [1, 0, 0, 1, 0, 1, 0]
    for k in range(1, 8):
        assert pass_at_k(7, 3, k) == pytest.approx(brute(scores, k, lambda s: float(max(s))))
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k(4, 1, 5)


def test_best_at_k_and_avg():
    acc = [0.2, 0.9, 0.5, 0.5, 0.0]
    for k in range(1, 6):
        assert best_at_k(acc, k) == pytest.approx(brute(acc, k, max))
    assert avg_at_k(acc) == pytest.approx(0.42)


def test_maj_at_k():
    answers = ["4", "5", "4", "4", "x"]
    scores = [1, 0, 1, 1, 0]
    assert maj_at_k(answers, scores, 5) == 1.0  # "4" wins
    assert maj_at_k(answers, scores, 1) == pytest.approx(0.6)
    # k=2: ties go to the first chosen sample; majority == first of the pair
    assert maj_at_k(answers, scores, 2) == pytest.approx(brute(list(range(5)), 2, lambda s: scores[s[0]]))
    big = [str(i % 3) for i in range(40)]
    est = maj_at_k(big, [1.0 if a == "0" else 0.0 for a in big], 20)
    assert 0.0 <= est <= 1.0


def test_summarize_over_problems():
    out = summarize(
        [
            ProblemResult(scores=[1, 0, 0, 0], accuracies=[1, 0.5, 0.5, 0], answers=["a", "b", "b", "c"]),
            ProblemResult(scores=[0, 0, 0, 0], accuracies=[0, 0, 0.25, 0], answers=["a", "a", "a", "a"]),
        ],
        ks=[1, 4],
    )
    assert out["score/avg"] == pytest.approx(0.125)
    assert out["score/pass@4"] == pytest.approx(0.5)
    assert out["score/maj@4"] == 0.0
    assert out["accuracy/best@4"] == pytest.approx((1 + 0.25) / 2)
    assert out["accuracy/maj@4"] == pytest.approx((0.5 + 0) / 2)
