"""A step's metrics are means over what each one measures, however the step is micro-batched
(#22 item 10). ``ce_mean``, ``credit_mean``, the teacher KL and the IS statistics average over
teacher-scored tokens; a micro-batch that mixes scored and unscored samples used to weigh
them by all its response tokens, so an unscored sample pulled the step's mean towards its
micro-batch's. Maxima combine by max, per-sample means by samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.batching import TrainSample, micro_batches
from services.learner.config import TrainConfig
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner

V = 49152
K = 5


def sample(rng, P, T, scored, group_id):
    logits = rng.normal(size=(T, V)) * 3
    lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    ids = np.argsort(-lp, axis=-1)[:, :K]
    return TrainSample(
        prompt_ids=rng.integers(0, V, P),
        response_ids=rng.integers(0, V, T),
        rollout_logprobs=rng.uniform(-12.0, -9.0, T).astype(np.float32),
        teacher_topk_ids=ids if scored else None,
        teacher_topk_logprobs=np.take_along_axis(lp, ids, -1).astype(np.float32) if scored else None,
        teacher_mask=scored,
        group_id=group_id,
    )


def three_samples():
    rng = np.random.default_rng(0)
    unscored = sample(rng, 3, 10, False, 0)  # length 13: the longest, packed with `first`
    first = sample(rng, 3, 8, True, 0)  # length 11
    second = sample(rng, 3, 4, True, 1)  # length 7: a micro-batch of its own at budget 26
    return unscored, first, second


def step(tiny_model_dir, samples, budget, objective=None):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    learner = Learner(
        PolicyLogprobs(model), objective or ObjectiveConfig(), TrainConfig(token_budget=budget), pad_id=0
    )
    return learner.step([dataclasses.replace(s) for s in samples])


def test_ce_and_credit_means_average_over_teacher_scored_tokens_only(tiny_model_dir):
    unscored, first, second = three_samples()
    assert [len(mb) for mb in micro_batches([unscored, first, second], 26)] == [2, 1]
    got = step(tiny_model_dir, [unscored, first, second], budget=26)
    # Each scored sample alone: its own mean CE / credit over its tokens.
    alone = [step(tiny_model_dir, [s], budget=10_000) for s in (first, second)]
    n = [len(first.response_ids), len(second.response_ids)]
    for key in ("ce_mean", "credit_mean", "kl_teacher_student", "is_ratio_mean"):
        want = (alone[0][key] * n[0] + alone[1][key] * n[1]) / sum(n)
        assert got[key] == pytest.approx(want, rel=1e-9), key
    assert got["credit_max"] == pytest.approx(max(a["credit_max"] for a in alone), rel=1e-9)
    assert got["teacher_tokens"] == sum(n) and got["tokens"] == sum(n) + len(unscored.response_ids)


def test_one_scored_and_one_unscored_sample_report_the_scored_samples_mean_ce(tiny_model_dir):
    unscored, first, _ = three_samples()
    want = step(tiny_model_dir, [first], budget=10_000)
    for budget in (10_000, 13):  # together, and in micro-batches of their own
        got = step(tiny_model_dir, [unscored, first], budget=budget)
        assert got["ce_mean"] == pytest.approx(want["ce_mean"], rel=1e-9)
        assert got["credit_mean"] == pytest.approx(want["credit_mean"], rel=1e-9)


@pytest.mark.parametrize("objective", [ObjectiveConfig(), ObjectiveConfig(name="sdpo")])
def test_every_metric_is_the_same_however_the_step_is_micro_batched(tiny_model_dir, objective):
    samples = list(three_samples())
    one = step(tiny_model_dir, samples, budget=10_000, objective=objective)  # one micro-batch
    split = step(tiny_model_dir, samples, budget=26, objective=objective)  # two
    skip = {"grad_norm", "loss", "tokens_per_s", "lr", "step", "skipped_nonfinite"}
    skip |= {k for k in one if k.startswith("time_")}
    assert set(one) == set(split)
    for key in sorted(set(one) - skip):
        assert split[key] == pytest.approx(one[key], rel=1e-7, abs=1e-12), key
    assert one["teacher_frac"] == pytest.approx(2 / 3) and one["response_length_mean"] == pytest.approx(
        22 / 3
    )
