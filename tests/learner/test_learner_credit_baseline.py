"""credit_baseline="group_mean" in the learner: the leave-one-out sibling mean is computed over
whole groups before micro-batching, so the step's gradient does not depend on how the
token budget packs or splits the groups."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from distil.losses import ObjectiveConfig
from services.learner.batching import micro_batches
from services.learner.config import TrainConfig
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner
from tests.learner.test_learner_fsdp import free_port
from tests.learner.test_learner_step import load, samples


def grads(model_dir, budget, baseline="group_mean", ss=None):
    model = load(model_dir)
    cfg = ObjectiveConfig(name="distil", credit_baseline=baseline)
    learner = Learner(PolicyLogprobs(model), cfg, TrainConfig(lr=1e-9, token_budget=budget), pad_id=0)
    m = learner.step(ss or samples(n=8, seed=3))
    return m, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_group_baseline_does_not_depend_on_the_micro_batch_split(tiny_model_dir):
    ss = samples(n=8, seed=3)  # two groups of 3 and one of 2, lengths 5..20, sample 2 without teacher
    assert len({s.length for s in ss}) > 3
    assert len(micro_batches(ss, 10_000)) == 1 and len(micro_batches(ss, 12)) == len(ss)
    m_whole, g_whole = grads(tiny_model_dir, 10_000)
    for budget in (12, 40):
        m_split, g_split = grads(tiny_model_dir, budget)
        assert m_split["loss"] == pytest.approx(m_whole["loss"], rel=1e-5)
        for n in g_whole:
            torch.testing.assert_close(g_split[n], g_whole[n], rtol=1e-4, atol=1e-6)


def test_group_baseline_changes_the_gradient(tiny_model_dir):
    """Not vacuous: with the baseline the step's gradient differs from the plain estimator's."""
    _, g_based = grads(tiny_model_dir, 10_000)
    _, g_plain = grads(tiny_model_dir, 10_000, baseline="none")
    diff = max(float((g_based[n] - g_plain[n]).abs().max()) for n in g_plain)
    scale = max(float(g_plain[n].abs().max()) for n in g_plain)
    assert diff > 1e-3 * scale


def test_group_baseline_does_not_mutate_the_callers_samples(tiny_model_dir):
    ss = samples(n=8, seed=3)
    before = [np.copy(s.response_ids) for s in ss]
    grads(tiny_model_dir, 12, ss=ss)
    assert all(getattr(s, "credit_baseline", None) is None for s in ss)
    assert all(np.array_equal(a, s.response_ids) for a, s in zip(before, ss, strict=True))


def launch(world: int, model_dir, out) -> dict:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.learner.fsdp_worker"]
            + [str(a) for a in (r, world, port, model_dir, out, 2, "group_mean")],
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output.decode()[-3000:]
    return torch.load(out)


@pytest.mark.slow
def test_group_baseline_on_two_ranks_matches_one_rank(tiny_model_dir, tmp_path):
    """The ranks share each group out (every world_size-th sample): the credits of the
    pre-pass are summed across ranks before the baseline, so 2 ranks equal 1."""
    one = launch(1, tiny_model_dir, tmp_path / "one.pt")
    two = launch(2, tiny_model_dir, tmp_path / "two.pt")
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert a == pytest.approx(b, abs=1e-5, rel=1e-5)
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-5)


def _tightest_whole_group_budget(ss) -> int:
    groups: dict[int, list] = {}
    for s in ss:
        groups.setdefault(s.group_id, []).append(s)
    return max(len(g) * max(s.length for s in g) for g in groups.values())


def test_whole_groups_are_packed_without_splitting_one():
    from services.learner.batching import whole_group_batches

    ss = samples(n=8, seed=3)
    assert whole_group_batches(ss, 12) is None  # a group alone is over the budget
    budget = _tightest_whole_group_budget(ss)
    plan = whole_group_batches(ss, budget)
    assert plan is not None and len(plan) >= 2
    assert sorted(id(s) for b in plan for s in b) == sorted(id(s) for s in ss)
    for b in plan:
        assert len(b) * max(s.length for s in b) <= budget
        for g in {s.group_id for s in b}:  # every sibling of a group in this batch is here
            assert sum(s.group_id == g for s in b) == sum(s.group_id == g for s in ss)


def test_whole_group_micro_batches_skip_the_pre_pass_and_give_its_gradient(tiny_model_dir, monkeypatch):
    calls = []
    original = Learner._with_credit_baselines

    def counting(self, ordered):
        calls.append(len(ordered))
        return original(self, ordered)

    monkeypatch.setattr(Learner, "_with_credit_baselines", counting)
    ss = samples(n=8, seed=3)
    m_pre, g_pre = grads(tiny_model_dir, 12)  # groups split: the pre-pass computes the baselines
    assert calls == [8]
    m_whole, g_whole = grads(tiny_model_dir, _tightest_whole_group_budget(ss))  # >= 2 micro-batches
    assert calls == [8]  # no pre-pass
    assert m_whole["loss"] == pytest.approx(m_pre["loss"], rel=1e-5)
    for n in g_pre:
        torch.testing.assert_close(g_whole[n], g_pre[n], rtol=1e-4, atol=1e-6)
