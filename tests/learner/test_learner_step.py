from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from distil.losses import ObjectiveConfig
from services.learner.batching import TrainSample, collate, micro_batches
from services.learner.config import TrainConfig
from services.learner.policy import PolicyLogprobs
from services.learner.step import Learner, NonFiniteLossError

V = 49152


def samples(n=6, K=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        P, T = int(rng.integers(3, 9)), int(rng.integers(2, 12))
        logits = rng.normal(size=(T, V)) * 3
        lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        ids = np.argsort(-lp, axis=-1)[:, :K]
        out.append(
            TrainSample(
                prompt_ids=rng.integers(0, V, P),
                response_ids=rng.integers(0, V, T),
                teacher_topk_ids=ids,
                teacher_topk_logprobs=np.take_along_axis(lp, ids, -1).astype(np.float32),
                teacher_mask=i != 2,
                group_id=i // 3,
            )
        )
    return out


def load(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_gathered_logprobs_match_a_full_forward(tiny_model_dir):
    model = load(tiny_model_dir)
    ss = samples()
    batch = collate(ss, pad_id=0)
    got = PolicyLogprobs(model, chunk_size=3)(
        batch.input_ids, batch.attention_mask, batch.predict_positions, batch.loss_batch.response_ids, None
    )
    for b, s in enumerate(ss):
        ids = torch.as_tensor(np.concatenate([s.prompt_ids, s.response_ids]))[None]
        logp = torch.log_softmax(model(ids).logits[0], -1)
        P, T = len(s.prompt_ids), len(s.response_ids)
        want = logp[P - 1 : P + T - 1].gather(-1, torch.as_tensor(s.response_ids)[:, None])[:, 0]
        torch.testing.assert_close(got.token_logprobs[b, :T], want, rtol=1e-4, atol=1e-4)


def test_micro_batches_respect_the_budget_and_keep_everything():
    ss = samples(n=9)
    mbs = micro_batches(ss, token_budget=30)
    assert sorted(id(s) for mb in mbs for s in mb) == sorted(id(s) for s in ss)
    for mb in mbs:
        assert len(mb) == 1 or len(mb) * max(s.length for s in mb) <= 30
    with pytest.raises(ValueError, match="token_budget"):
        micro_batches(ss, 0)


def seq_logprobs(model, ss):
    batch = collate(ss, pad_id=0)
    with torch.no_grad():
        s = PolicyLogprobs(model)(
            batch.input_ids,
            batch.attention_mask,
            batch.predict_positions,
            batch.loss_batch.response_ids,
            None,
        )
    return (s.token_logprobs * batch.loss_batch.response_mask).sum(-1)


def grads_after_one_step(model_dir, budget, name="distil"):
    model = load(model_dir)
    learner = Learner(
        PolicyLogprobs(model), ObjectiveConfig(name=name), TrainConfig(token_budget=budget), pad_id=0
    )
    m = learner.step(samples(), rewards=[1, 0, 0, 1, 1, 0])
    return m, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_accumulation_over_micro_batches_equals_one_batch(tiny_model_dir):
    m1, w1 = grads_after_one_step(tiny_model_dir, budget=10_000)
    m2, w2 = grads_after_one_step(tiny_model_dir, budget=12)
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5)
    for n in w1:
        torch.testing.assert_close(w1[n], w2[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "lr"), [("distil", 1e-3), ("ce", 3e-3), ("sdpo", 1e-2), ("grpo", 3e-3), ("sft", 3e-3)]
)
def test_steps_reduce_the_loss_on_a_fixed_batch(tiny_model_dir, name, lr):
    """On a fixed (off-policy) batch DistIL's credit term keeps pushing the fixed samples
    down, so its teacher CE falls slowly; a small step still has to reduce it."""
    model = load(tiny_model_dir)
    cfg = TrainConfig(lr=lr, teacher_ema_rate=0.5)
    learner = Learner(PolicyLogprobs(model), ObjectiveConfig(name=name), cfg, pad_id=0)
    ss = samples()
    key = {"distil": "ce_mean", "ce": "ce_mean", "sdpo": "divergence_mean"}.get(name, "loss")
    rewards = [1, 0, 0, 1, 1, 0]
    before = seq_logprobs(model, ss)
    first = learner.step(ss, rewards=rewards)
    for _ in range(5):
        last = learner.step(ss, rewards=rewards)
    if name == "grpo":  # its surrogate is constant at ratio 1: check rewarded samples became likelier
        moved = seq_logprobs(model, ss) - before
        good = torch.tensor(rewards, dtype=torch.bool)
        assert moved[good].mean() > moved[~good].mean() + 0.1
    else:
        assert last[key] < first[key] * 0.99, (first[key], last[key])
    assert learner.state.step == 6
    # the EMA teacher moved toward the student but is not the student
    name0, p0 = next(iter(model.named_parameters()))
    ema = learner.ema.params[name0]
    assert not torch.equal(ema, p0.detach()) and (ema - p0.detach()).abs().max() > 0


def test_frozen_teacher_stays_at_the_initial_weights(tiny_model_dir):
    model = load(tiny_model_dir)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner = Learner(
        PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(lr=1e-3, teacher_ema_rate=0.0), pad_id=0
    )
    learner.step(samples())
    for n, p in learner.ema.params.items():
        torch.testing.assert_close(p, init[n])


def test_nonfinite_steps_are_skipped_then_fail(tiny_model_dir):
    model = load(tiny_model_dir)
    learner = Learner(PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(max_nonfinite_steps=2), pad_id=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.get_output_embeddings().weight[5, 0] = float("nan")
    m = learner.step(samples())
    assert m["skipped_nonfinite"] == 1 and learner.state.step == 0
    for n, p in model.named_parameters():
        if "embed" not in n and "lm_head" not in n:
            torch.testing.assert_close(p, before[n])  # nothing was applied
    with pytest.raises(NonFiniteLossError, match="2 steps in a row"):
        learner.step(samples())


def test_samples_from_a_tempered_rollout_train_with_ratio_one(tiny_model_dir):
    """The rollout's log-probs at its sampling temperature go through collate, the chunked
    gather and the step: on fresh data the learner measures no mismatch and ratio 1."""
    model = load(tiny_model_dir)
    ss = samples(n=4)
    assert collate(ss, pad_id=0).loss_batch.rollout_temperature is None  # temperature 1: no extra pass
    with torch.no_grad():
        for s in ss:
            ids = torch.as_tensor(np.concatenate([s.prompt_ids, s.response_ids]))[None]
            P, T = len(s.prompt_ids), len(s.response_ids)
            logp = torch.log_softmax(model(ids).logits[0, P - 1 : P + T - 1] / 0.7, -1)
            s.rollout_logprobs = logp.gather(-1, torch.as_tensor(s.response_ids)[:, None])[:, 0].numpy()
            s.rollout_temperature = 0.7
    assert collate(ss, pad_id=0).loss_batch.rollout_temperature.tolist() == pytest.approx([0.7] * 4)
    learner = Learner(PolicyLogprobs(model, chunk_size=3), ObjectiveConfig(), TrainConfig(lr=1e-6), pad_id=0)
    m = learner.step(ss)
    assert abs(m["rollout_kl"]) < 1e-4 and m["rollout_max_abs_diff"] < 1e-3
    assert m["is_ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    for s in ss:
        s.rollout_temperature = 1.0  # as before the fix: tempered log-probs against temperature 1
    assert (
        Learner(PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(lr=1e-6), pad_id=0).step(ss)[
            "rollout_max_abs_diff"
        ]
        > 0.1
    )


def test_bf16_autocast_keeps_fp32_master_weights(tiny_model_dir):
    """A single GPU rank computes in bf16 over fp32 weights (``training_policy`` sets it; CPU
    autocast runs the same code here): log-probs within bf16 noise of fp32, gradients and
    weights in fp32."""
    model = load(tiny_model_dir)
    ss = samples(n=3)
    batch = collate(ss, pad_id=0)
    args = (
        batch.input_ids,
        batch.attention_mask,
        batch.predict_positions,
        batch.loss_batch.response_ids,
        None,
    )
    ref = PolicyLogprobs(model)(*args).token_logprobs
    bf16 = PolicyLogprobs(model, autocast_dtype=torch.bfloat16)
    got = bf16(*args).token_logprobs
    mask = batch.loss_batch.response_mask
    assert got.dtype == torch.float32
    err = (got - ref).detach()[mask].abs()
    assert 0 < float(err.max()) < 0.5 and float(err.mean()) < 0.1  # bf16 matmuls, not fp32 ones
    got.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
