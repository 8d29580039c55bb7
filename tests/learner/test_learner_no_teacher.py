"""A learner step whose mini-batch holds samples without a teacher signal (teacher outage,
a long unscored sample alone in its micro-batch, the FSDP padding pass over an unscored
sample): the step completes, and its gradient is that of the step without those samples."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from distil.losses import ObjectiveConfig
from services.learner.batching import micro_batches
from services.learner.config import TrainConfig
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner
from tests.learner.test_learner_fsdp import free_port
from tests.learner.test_learner_step import load, samples


def with_unscored_longest(ss):
    """The longest sample as the teacher stage sends it after an outage: no top-K at all."""
    longest = max(range(len(ss)), key=lambda i: ss[i].length)
    out = list(ss)
    out[longest] = dataclasses.replace(
        ss[longest], teacher_topk_ids=None, teacher_topk_logprobs=None, teacher_mask=False
    )
    return out, longest


def grads(model_dir, ss, name="distil", budget=12):
    model = load(model_dir)
    learner = Learner(
        PolicyLogprobs(model), ObjectiveConfig(name=name), TrainConfig(lr=1e-9, token_budget=budget), pad_id=0
    )
    m = learner.step(ss, rewards=[float(i % 2) for i in range(len(ss))])
    return m, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["distil", "ce", "sdpo"])
def test_a_micro_batch_without_teacher_signal_adds_nothing(tiny_model_dir, name):
    ss, longest = with_unscored_longest(samples(n=6, seed=1))
    # the unscored sample is alone in its micro-batch (and so has no teacher top-K at all)
    alone = [mb for mb in micro_batches(ss, 12) if any(s is ss[longest] for s in mb)]
    assert alone == [[ss[longest]]]
    m_with, g_with = grads(tiny_model_dir, ss, name)
    m_without, g_without = grads(tiny_model_dir, [s for i, s in enumerate(ss) if i != longest], name)
    assert m_with["loss"] == pytest.approx(m_without["loss"], rel=1e-6)
    assert m_with["grad_norm"] == pytest.approx(m_without["grad_norm"], rel=1e-5)
    assert set(g_with) == set(g_without)
    for n in g_without:
        torch.testing.assert_close(g_with[n], g_without[n], rtol=1e-5, atol=1e-7)
    # metrics of the distillation terms average over the micro-batches that have them
    key = "divergence_mean" if name == "sdpo" else "ce_mean"
    assert m_with[key] == pytest.approx(m_without[key], rel=1e-5)


def test_a_mini_batch_without_any_teacher_signal_trains_nothing(tiny_model_dir):
    """A full teacher outage: every sample unscored. The step runs, with zero gradient."""
    ss = [
        dataclasses.replace(s, teacher_topk_ids=None, teacher_topk_logprobs=None, teacher_mask=False)
        for s in samples(n=4, seed=2)
    ]
    m, g = grads(tiny_model_dir, ss)
    assert m["loss"] == 0.0 and m["grad_norm"] == 0.0
    assert all(float(t.abs().max()) == 0.0 for t in g.values())


def launch(world: int, model_dir, out, drop: bool) -> dict:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.learner.no_teacher_worker"]
            + [str(a) for a in (r, world, port, model_dir, out, int(drop))],
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
def test_fsdp_padding_pass_over_an_unscored_sample(tiny_model_dir, tmp_path):
    """2 gloo ranks, 3 samples, one per micro-batch: rank 1 has one micro-batch fewer and pads
    with a zero-weight pass over the longest sample, which has no teacher signal. The step
    completes on both ranks and matches 1 rank, and 1 rank without the unscored sample."""
    two = launch(2, tiny_model_dir, tmp_path / "two.pt", drop=False)
    one = launch(1, tiny_model_dir, tmp_path / "one.pt", drop=False)
    ref = launch(1, tiny_model_dir, tmp_path / "ref.pt", drop=True)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert one["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    for name, w in ref["weights"].items():
        torch.testing.assert_close(one["weights"][name], w, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6)
