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


def record_optimizer_steps(learner: Learner) -> list[dict]:
    """Record what each ``optimizer.step`` of the learner is given: the learning
    rate and the trainable parameters' gradients (after clipping, as the update uses them)."""
    seen: list[dict] = []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]]
        seen.append({"lr": optimizer.param_groups[0]["lr"], "grads": grads})

    learner.optimizer.register_step_pre_hook(before_step)
    return seen


def test_lr_warms_up_linearly_then_stays_constant(tiny_model_dir):
    lr = 1e-3
    learner = Learner(
        PolicyLogprobs(load(tiny_model_dir)), ObjectiveConfig(), TrainConfig(lr=lr, warmup_steps=3), pad_id=0
    )
    seen = record_optimizer_steps(learner)
    reported = [learner.step(samples(n=3))["lr"] for _ in range(5)]
    want = [lr / 3, 2 * lr / 3, lr, lr, lr]
    assert [s["lr"] for s in seen] == pytest.approx(want, rel=1e-9)  # as applied by AdamW
    assert reported == pytest.approx(want, rel=1e-9)  # each step reports the lr it used


def test_gradients_are_clipped_to_grad_clip_and_the_pre_clip_norm_is_reported(tiny_model_dir):
    def one_step(grad_clip):
        learner = Learner(
            PolicyLogprobs(load(tiny_model_dir)),
            ObjectiveConfig(),
            TrainConfig(grad_clip=grad_clip),
            pad_id=0,
        )
        seen = record_optimizer_steps(learner)
        metrics = learner.step(samples())
        return metrics["grad_norm"], seen[0]["grads"]

    norm, clipped = one_step(TrainConfig().grad_clip)  # the default, 1.0
    free_norm, free = one_step(1e9)  # same model and batch, never clipped
    assert norm == pytest.approx(free_norm, rel=1e-5)  # the reported norm is the pre-clip one
    assert norm > 2.0  # this batch's gradient is large enough for clipping to matter
    total = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in clipped])))
    assert total == pytest.approx(1.0, rel=1e-4)  # the optimizer saw a gradient of norm grad_clip
    for c, f in zip(clipped, free, strict=True):  # same direction, scaled by grad_clip / norm
        torch.testing.assert_close(c, f / free_norm, rtol=1e-4, atol=1e-9)


def test_a_distil_step_reports_every_per_step_learner_metric(tiny_model_dir):
    """algorithm.md's per-step learner metrics, by our names (the stage adds reward, success,
    teacher-signal fraction, dropped-stale, wait/push timings: test_learner_stage.py)."""
    ss = samples()
    for s in ss:
        s.rollout_logprobs = np.full(len(s.response_ids), -11.0, dtype=np.float32)
    learner = Learner(PolicyLogprobs(load(tiny_model_dir)), ObjectiveConfig(), TrainConfig(), pad_id=0)
    m = learner.step(ss)
    want = {
        "loss": "loss",
        "CE mean": "ce_mean",
        "future-credit mean/max": ("credit_mean", "credit_max"),
        "IS ratio mean/max/clip fraction": ("is_ratio_mean", "is_ratio_max", "is_clip_frac"),
        "teacher-student KL on the top-K support": "kl_teacher_student",
        "student entropy": "entropy_mean",
        "rollout vs learner mismatch": ("rollout_kl", "rollout_max_abs_diff"),
        "grad norm": "grad_norm",
        "lr": "lr",
        "response length mean/max": ("response_length_mean", "response_length_max"),
        "tokens, tokens/s": ("tokens", "tokens_per_s"),
        "forward/backward and optimizer time": ("time_forward_backward", "time_optimizer"),
    }
    keys = [k for v in want.values() for k in ((v,) if isinstance(v, str) else v)]
    missing = [k for k in keys if k not in m]
    assert not missing, f"missing per-step metrics {missing}; reported {sorted(m)}"
    assert all(np.isfinite(m[k]) for k in keys), {k: m[k] for k in keys}
    assert m["tokens"] == sum(len(s.response_ids) for s in ss)
    assert m["credit_max"] >= m["credit_mean"] and m["is_ratio_max"] >= m["is_ratio_mean"] > 0
    assert m["rollout_max_abs_diff"] > 0 and m["entropy_mean"] > 0 and m["grad_norm"] > 0
    assert m["time_forward_backward"] > 0 and m["time_optimizer"] > 0 and m["tokens_per_s"] > 0


def test_policy_keeps_the_logits_only_when_they_fit_the_budget(tiny_model_dir, monkeypatch):
    import services.learner.policy as policy_module
    from services.learner.distributed import Topology
    from services.learner.policy import training_policy

    model = load(tiny_model_dir)
    batch = collate(samples(), pad_id=0)
    B, T = batch.predict_positions.shape
    size = 4 * B * T * model.config.vocab_size  # the micro-batch's fp32 logits
    chosen = []
    real = policy_module.chunked_student_logprobs

    def spy(*args, **kwargs):
        chosen.append(kwargs["recompute"])
        return real(*args, **kwargs)

    monkeypatch.setattr(policy_module, "chunked_student_logprobs", spy)
    for keep in (size, size - 1, 0):
        PolicyLogprobs(model, keep_logits_bytes=keep)(
            batch.input_ids,
            batch.attention_mask,
            batch.predict_positions,
            batch.loss_batch.response_ids,
            None,
        )
    assert chosen == [False, True, True]
    policy = training_policy(model, TrainConfig(logits_keep_mb=3), Topology())
    assert policy.keep_logits_bytes == 3 * 2**20
