from __future__ import annotations

import itertools
from math import comb

import pytest

from distil.metrics import (
    ProblemResult,
    avg_at_k,
    best_at_k,
    maj_at_k,
    majority_score,
    pass_at_k,
    summarize,
)


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


def test_majority_score_issue_example_is_independent_of_order():
    """#22 item 7: answers 4/4/5/4 scored [1,1,0,1] and the same samples reordered
    (5/4/4/4, [0,1,1,1]) both vote "4" and earn 1.0. Before, the vote went to sample 0
    whenever the keys did not decide it (the whole text was the key, so nearly always)."""
    assert majority_score(["4", "4", "5", "4"], [1, 1, 0, 1]) == 1.0
    assert majority_score(["5", "4", "4", "4"], [0, 1, 1, 1]) == 1.0
    assert maj_at_k(["5", "4", "4", "4"], [0, 1, 1, 1], 4) == 1.0
    for perm in itertools.permutations(range(4)):
        keys, scores = ["4", "4", "5", "4"], [1.0, 1.0, 0.0, 1.0]
        assert majority_score([keys[i] for i in perm], [scores[i] for i in perm]) == 1.0


def test_majority_score_ties_go_to_the_best_mean_score_not_the_first_sample():
    # Two answers with two votes each: the one whose samples score higher wins, in any order.
    assert majority_score(["5", "5", "4", "4"], [0, 0, 1, 1]) == 1.0
    assert majority_score(["4", "4", "5", "5"], [1, 1, 0, 0]) == 1.0
    # All distinct (what voting on the whole text gave): the best answer, not sample 0's.
    assert majority_score(["a", "b", "c"], [0.0, 0.5, 0.25]) == 0.5
    # A tie on votes and on mean score: either winner gives the same value.
    assert majority_score(["a", "b"], [1.0, 1.0]) == 1.0
    # More votes beat a better score.
    assert majority_score(["5", "5", "4"], [0, 0, 1]) == 0.0
    # The winner's mean score (accuracy can differ within one answer key for custom scores).
    assert majority_score(["a", "a", "b"], [0.5, 1.0, 0.0]) == 0.75


def test_majority_score_samples_without_an_answer_do_not_vote():
    assert majority_score([None, None, None, "4"], [0, 0, 0, 1]) == 1.0
    assert majority_score([None, "5", None, "5"], [0, 0, 0, 0]) == 0.0
    assert majority_score([None, None], [0.0, 0.5]) == 0.25  # nobody votes: the mean
    with pytest.raises(ValueError, match="keys has 2"):
        majority_score(["a", "b"], [1.0])


def test_maj_at_k_is_the_subset_average_of_majority_score():
    answers = ["4", "5", "4", "4", "x"]
    scores = [1, 0, 1, 1, 0]
    assert maj_at_k(answers, scores, 5) == 1.0  # "4" wins
    assert maj_at_k(answers, scores, 1) == pytest.approx(0.6)
    for k in range(1, 6):
        want = brute(
            list(range(5)), k, lambda s: majority_score([answers[i] for i in s], [scores[i] for i in s])
        )
        assert maj_at_k(answers, scores, k) == pytest.approx(want)
    # k=2: every pair holding a "4" votes "4" (outright or on the tie); only ("5", "x") scores 0.
    assert maj_at_k(answers, scores, 2) == pytest.approx(0.9)
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
    # The winning answer's mean accuracy: "b" (0.5) and "a" (0.25 / 4).
    assert out["accuracy/maj@4"] == pytest.approx((0.5 + 0.0625) / 2)
