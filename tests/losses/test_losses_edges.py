"""Edge cases of the objectives: tails, padding, masks, IS weights, bf16, closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from distil.losses import (
    LossBatch,
    ObjectiveConfig,
    chunked_student_logprobs,
    compute_loss,
    compute_loss_from_logprobs,
    gather_student_logprobs,
    group_advantages,
    sampled_teacher_targets,
)

DISTILL = ["distil", "ce", "sdpo", "opsd"]


def make(B=3, T=6, V=13, K=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=dtype).requires_grad_()
    teacher = torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2, -1)
    lp, ids = teacher.topk(K, dim=-1)
    batch = LossBatch(
        response_ids=torch.randint(0, V, (B, T), generator=g),
        response_mask=torch.ones(B, T, dtype=torch.bool),
        teacher_topk_ids=ids,
        teacher_topk_logprobs=lp,
    )
    return logits, batch, teacher


def loss_of(name, logits, batch, **kw):
    return compute_loss(ObjectiveConfig(name=name, **kw), logits, batch)


# --- support --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISTILL)
def test_k_equal_vocabulary_has_no_tail_mass(name):
    logits, batch, teacher = make(K=13)
    with_tail = loss_of(name, logits, batch, topk_tail=True).loss
    without = loss_of(name, logits, batch, topk_tail=False).loss
    torch.testing.assert_close(with_tail, without)
    g = torch.autograd.grad(with_tail, logits)[0]
    assert torch.isfinite(g).all()


def test_full_vocabulary_ce_matches_direct_formula():
    logits, batch, teacher = make(K=13)
    out = loss_of("ce", logits, batch)
    direct = -(teacher.exp() * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(out.loss, direct)


def test_tail_bucket_value():
    logits, batch, teacher = make(K=4)
    s = torch.log_softmax(logits, -1)
    ids = batch.teacher_topk_ids
    t_k, s_k = batch.teacher_topk_logprobs.exp(), s.gather(-1, ids).exp()
    want = -(t_k * s_k.log()).sum(-1) - (1 - t_k.sum(-1)) * torch.log(1 - s_k.sum(-1))
    torch.testing.assert_close(loss_of("ce", logits, batch).loss, want.mean())
    # without the tail both sides are renormalised over the K ids
    t_r, s_r = t_k / t_k.sum(-1, keepdim=True), s_k / s_k.sum(-1, keepdim=True)
    torch.testing.assert_close(
        loss_of("ce", logits, batch, topk_tail=False).loss, -(t_r * s_r.log()).sum(-1).mean()
    )


# --- the JSD family against closed forms ----------------------------------------------


def jsd_closed(s, t, alpha):
    if alpha == 0:
        return (t * (t / s).log()).sum(-1)
    if alpha == 1:
        return (s * (s / t).log()).sum(-1)
    m = (1 - alpha) * s + alpha * t
    return alpha * (t * (t / m).log()).sum(-1) + (1 - alpha) * (s * (s / m).log()).sum(-1)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_jsd_family_values_and_gradients(alpha):
    logits, batch, teacher = make(K=13)
    out = loss_of("sdpo", logits, batch, alpha=alpha)
    s, t = torch.softmax(logits, -1), teacher.exp()
    torch.testing.assert_close(out.loss, jsd_closed(s, t, alpha).mean())
    (g,) = torch.autograd.grad(out.loss, logits)
    n = logits.shape[0] * logits.shape[1]
    if alpha == 0:  # forward KL: d/dz = s - t
        torch.testing.assert_close(g, (s - t) / n)
    if alpha == 1:  # reverse KL: d/dz_a = s_a (log(s_a/t_a) - KL)
        kl = (s * (s / t).log()).sum(-1, keepdim=True)
        torch.testing.assert_close(g, s * ((s / t).log() - kl) / n)
    if 0 < alpha < 1:
        assert torch.autograd.gradcheck(
            lambda z: loss_of("sdpo", z, batch, alpha=alpha).loss, (logits.detach().clone().requires_grad_(),)
        )


def test_jsd_is_local_only_and_sdpo_opsd_defaults():
    assert ObjectiveConfig(name="sdpo").alpha == 1.0
    assert ObjectiveConfig(name="opsd").alpha == 0.0
    logits, batch, _ = make(K=13)
    # changing the sampled tokens changes nothing for a local objective without IS weights
    other = LossBatch(**{**batch.__dict__, "response_ids": (batch.response_ids + 1) % 13})
    torch.testing.assert_close(loss_of("sdpo", logits, batch).loss, loss_of("sdpo", logits, other).loss)


# --- DistIL's credit: padding, lengths, masks ------------------------------------------


def padded_copy(logits, batch, positions, T_new):
    """Spread the valid tokens of each row to ``positions`` in a longer row full of garbage."""
    B, _, V = logits.shape
    K = batch.teacher_topk_ids.shape[-1]
    g = torch.Generator().manual_seed(99)
    new_logits = torch.randn(B, T_new, V, generator=g, dtype=logits.dtype) * 50
    new_logits[:, positions] = logits.detach()
    new_logits.requires_grad_()
    ids = torch.full((B, T_new), -100)
    ids[:, positions] = batch.response_ids
    mask = torch.zeros(B, T_new, dtype=torch.bool)
    mask[:, positions] = True
    t_ids = torch.randint(0, V, (B, T_new, K), generator=g)
    t_ids[:, positions] = batch.teacher_topk_ids
    t_lp = torch.full((B, T_new, K), float("nan"), dtype=torch.float64)
    t_lp[:, positions] = batch.teacher_topk_logprobs
    roll = torch.full((B, T_new), float("inf"), dtype=torch.float64)
    roll[:, positions] = batch.rollout_logprobs
    return new_logits, LossBatch(ids, mask, t_ids, t_lp, rollout_logprobs=roll)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("distil", {"length_normalize": True}),
        ("distil", {"length_normalize": False}),
        ("ce", {}),
        ("sdpo", {}),
        ("opsd", {}),
    ],
)
def test_padding_in_the_middle_and_end_never_leaks(name, kw):
    logits, batch, _ = make(T=5)
    batch.rollout_logprobs = torch.log_softmax(torch.randn(3, 5, 13, dtype=torch.float64), -1)[..., 0]
    positions = [0, 2, 3, 6, 7]  # holes at 1, 4, 5 and padding at 8, 9
    p_logits, p_batch = padded_copy(logits, batch, positions, 10)
    a = loss_of(name, logits, batch, **kw)
    b = loss_of(name, p_logits, p_batch, **kw)
    torch.testing.assert_close(a.loss, b.loss)
    (ga,) = torch.autograd.grad(a.loss, logits)
    (gb,) = torch.autograd.grad(b.loss, p_logits)
    torch.testing.assert_close(gb[:, positions], ga)
    holes = [i for i in range(10) if i not in positions]
    assert gb[:, holes].abs().max() == 0


def test_future_credit_values_by_hand():
    from distil.losses.distil import future_credit

    ce = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    # valid CE values 1, 3, 4: credits (3+4)/2, 4/1, 0 ; holes get 0
    torch.testing.assert_close(
        future_credit(ce, mask, length_normalize=True), torch.tensor([[3.5, 0, 4, 0, 0]])
    )
    torch.testing.assert_close(
        future_credit(ce, mask, length_normalize=False), torch.tensor([[7.0, 0, 4, 0, 0]])
    )


def test_length_one_responses_have_no_future_credit():
    logits, batch, _ = make(T=1)
    d, c = loss_of("distil", logits, batch), loss_of("ce", logits, batch)
    torch.testing.assert_close(d.loss, c.loss)
    assert d.metrics["credit_max"] == 0.0


@pytest.mark.parametrize("name", DISTILL + ["grpo", "sft"])
def test_fully_masked_sample_and_batch(name):
    logits, batch, _ = make()
    batch.advantages = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    batch.response_mask[1] = False
    out = compute_loss(ObjectiveConfig(name=name), logits, batch)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert torch.isfinite(out.loss) and g[1].abs().max() == 0 and g[0].abs().max() > 0
    batch.response_mask[:] = False
    out = compute_loss(ObjectiveConfig(name=name), logits, batch)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert float(out.loss.detach()) == 0.0 and g.abs().max() == 0


@pytest.mark.parametrize("name", DISTILL)
def test_teacher_mask_zero_contributes_nothing(name):
    logits, batch, _ = make()
    batch.teacher_mask = torch.tensor([True, False, True])
    out = loss_of(name, logits, batch)
    keep = [0, 2]
    sub = LossBatch(
        batch.response_ids[keep],
        batch.response_mask[keep],
        batch.teacher_topk_ids[keep],
        batch.teacher_topk_logprobs[keep],
    )
    ref = compute_loss(ObjectiveConfig(name=name), logits[keep], sub)
    torch.testing.assert_close(out.loss, ref.loss)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert g[1].abs().max() == 0
    assert out.metrics["teacher_frac"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["distil", "ce", "sdpo"])
def test_importance_weights_clip_on_and_off(name):
    logits, batch, _ = make(T=1)
    s = torch.log_softmax(logits.detach(), -1).gather(-1, batch.response_ids[..., None])[..., 0]
    base = loss_of(name, logits, batch).loss
    batch.rollout_logprobs = s - math.log(3.0)  # ratio 3 everywhere
    torch.testing.assert_close(loss_of(name, logits, batch).loss, 2 * base)  # clipped at 2
    torch.testing.assert_close(loss_of(name, logits, batch, is_clip=None).loss, 3 * base)
    out = loss_of(name, logits, batch)
    assert out.metrics["is_clip_frac"] == 1.0 and out.metrics["is_ratio_max"] == pytest.approx(3.0)
    batch.rollout_logprobs = s + math.log(2.0)  # ratio 1/2: below the clip, applied as is
    torch.testing.assert_close(loss_of(name, logits, batch).loss, 0.5 * base)


@pytest.mark.parametrize("name", DISTILL + ["grpo", "sft"])
def test_bf16_inputs(name):
    logits, batch, _ = make(dtype=torch.float32)
    batch.advantages = torch.tensor([1.0, -1.0, 0.5])
    ref = compute_loss(ObjectiveConfig(name=name), logits, batch).loss
    low = logits.detach().bfloat16().requires_grad_()
    batch.teacher_topk_logprobs = batch.teacher_topk_logprobs.bfloat16()
    out = compute_loss(ObjectiveConfig(name=name), low, batch)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref, rtol=0.05, atol=0.05)
    (g,) = torch.autograd.grad(out.loss, low)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


def test_seq_mean_and_normalizer():
    logits, batch, _ = make()
    batch.response_mask[0, 3:] = False
    per_seq = torch.stack(
        [
            compute_loss(
                ObjectiveConfig(name="ce"),
                logits[i : i + 1],
                LossBatch(
                    batch.response_ids[i : i + 1],
                    batch.response_mask[i : i + 1],
                    batch.teacher_topk_ids[i : i + 1],
                    batch.teacher_topk_logprobs[i : i + 1],
                ),
            ).loss
            for i in range(3)
        ]
    )
    out = compute_loss(ObjectiveConfig(name="ce", aggregation="seq_mean"), logits, batch)
    torch.testing.assert_close(out.loss, per_seq.mean())
    tok = compute_loss(ObjectiveConfig(name="ce"), logits, batch)
    n = int(batch.response_mask.sum())
    torch.testing.assert_close(
        compute_loss(ObjectiveConfig(name="ce"), logits, batch, normalizer=2 * n).loss, tok.loss / 2
    )


# --- GRPO and SFT ---------------------------------------------------------------------


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 0, 0, 5, 5])
    adv = group_advantages(r, g)
    std = torch.tensor([1.0, 0, 0, 1]).std()
    torch.testing.assert_close(adv[:4], (torch.tensor([1.0, 0, 0, 1]) - 0.5) / (std + 1e-6))
    assert adv[4:].abs().max() == 0
    torch.testing.assert_close(
        group_advantages(r, g, std_normalize=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5])
    )


def test_grpo_equal_rewards_give_zero_gradient_and_clipping():
    logits, batch, _ = make()
    batch.advantages = group_advantages(torch.ones(3), torch.zeros(3, dtype=torch.long)).double()
    (g,) = torch.autograd.grad(loss_of("grpo", logits, batch).loss, logits)
    assert g.abs().max() == 0
    # positive advantage with ratio far above 1 + clip_high: clipped, no gradient
    lp = torch.log_softmax(logits.detach(), -1).gather(-1, batch.response_ids[..., None])[..., 0]
    batch.advantages = torch.ones(3, dtype=torch.float64)
    batch.rollout_logprobs = lp - 1.0
    out = loss_of("grpo", logits, batch)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert g.abs().max() == 0 and out.metrics["clip_frac"] == 1.0
    torch.testing.assert_close(out.loss, torch.tensor(-1.28, dtype=torch.float64))
    # negative advantage with a large ratio is not clipped: gradient pushes the token down
    batch.advantages = -torch.ones(3, dtype=torch.float64)
    (g,) = torch.autograd.grad(loss_of("grpo", logits, batch).loss, logits)
    picked = g.gather(-1, batch.response_ids[..., None])
    assert (picked > 0).all()


def test_sft_is_token_cross_entropy():
    logits, batch, _ = make()
    want = -torch.log_softmax(logits, -1).gather(-1, batch.response_ids[..., None]).mean()
    torch.testing.assert_close(loss_of("sft", logits, batch).loss, want)


def test_sampled_teacher_targets_estimate_forward_ce():
    """K tokens sampled from the teacher per position: an unbiased estimate of the forward CE."""
    g = torch.Generator().manual_seed(0)
    T, V, K = 1000, 50, 8
    teacher = torch.log_softmax(torch.randn(V, generator=g, dtype=torch.float64) * 2, -1)
    logits = torch.randn(V, generator=g, dtype=torch.float64).expand(1, T, V)
    samples = torch.multinomial(teacher.exp(), T * K, replacement=True, generator=g).view(1, T, K)
    ids, lp = sampled_teacher_targets(samples)
    batch = LossBatch(torch.zeros(1, T, dtype=torch.long), torch.ones(1, T, dtype=torch.bool), ids, lp)
    est = compute_loss(ObjectiveConfig(name="ce", teacher_samples=True), logits, batch)
    exact = -(teacher.exp() * torch.log_softmax(logits[0, 0], -1)).sum()
    assert float(est.loss) == pytest.approx(float(exact), rel=0.02)


# --- chunked log-probs ----------------------------------------------------------------


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunked_logprobs_match_full(chunk, recompute):
    g = torch.Generator().manual_seed(1)
    B, T, H, V, K = 2, 10, 8, 17, 4
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    _, batch, _ = make(B=B, T=T, V=V, K=K)
    cfg = ObjectiveConfig(name="distil")
    full = compute_loss(cfg, hidden @ W.T, batch)
    s = chunked_student_logprobs(
        hidden, W, batch.response_ids, batch.teacher_topk_ids, chunk_size=chunk, recompute=recompute
    )
    part = compute_loss_from_logprobs(cfg, s, batch)
    torch.testing.assert_close(part.loss, full.loss)
    ga = torch.autograd.grad(full.loss, (hidden, W))
    gb = torch.autograd.grad(part.loss, (hidden, W))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
    ref = gather_student_logprobs(hidden @ W.T, batch.response_ids, batch.teacher_topk_ids)
    torch.testing.assert_close(s.entropy, ref.entropy)


def test_rollout_mismatch_metrics():
    logits, batch, _ = make()
    lp = torch.log_softmax(logits.detach(), -1).gather(-1, batch.response_ids[..., None])[..., 0]
    batch.rollout_logprobs = lp + 0.1
    batch.rollout_logprobs[0, 0] += 0.5
    m = loss_of("distil", logits, batch).metrics
    assert m["rollout_max_abs_diff"] == pytest.approx(0.6)
    assert m["rollout_kl"] == pytest.approx(0.1 + 0.5 / lp.numel())


# --- rollout temperature ----------------------------------------------------------------


def _tempered(logits: torch.Tensor, ids: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.detach() / tau[:, None, None], -1).gather(-1, ids[..., None])[..., 0]


@pytest.mark.parametrize("name", ["distil", "sdpo", "grpo"])
def test_fresh_samples_at_a_temperature_have_ratio_one(name):
    """The rollout's log-probs are of the tempered distribution it sampled from; on fresh
    data the learner's at that temperature equal them, so every ratio is 1 and the
    mismatch is 0. Compared with the temperature-1 log-probs they are not."""
    logits, batch, _ = make(B=4)
    tau = torch.tensor([0.7, 0.7, 0.5, 1.3], dtype=torch.float64)
    batch.rollout_logprobs = _tempered(logits, batch.response_ids, tau)
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    batch.rollout_temperature = tau
    m = loss_of(name, logits, batch).metrics
    ratio_key = "ratio_mean" if name == "grpo" else "is_ratio_mean"
    assert m[ratio_key] == pytest.approx(1.0, abs=1e-12)
    assert m["rollout_kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["rollout_max_abs_diff"] == pytest.approx(0.0, abs=1e-12)
    batch.rollout_temperature = None  # the mistake this guards against
    wrong = loss_of(name, logits, batch).metrics
    assert wrong["rollout_max_abs_diff"] > 0.1 and abs(wrong[ratio_key] - 1.0) > 1e-3


def test_grpo_gradient_is_that_of_the_tempered_policy():
    """On fresh data GRPO's gradient is -A * d log softmax(z/tau)[y] / dz per token (token mean)."""
    logits, batch, _ = make(B=2, T=1, V=7)
    tau = torch.tensor([0.6, 0.6], dtype=torch.float64)
    batch.rollout_logprobs = _tempered(logits, batch.response_ids, tau)
    batch.rollout_temperature = tau
    batch.advantages = torch.tensor([1.0, -2.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(loss_of("grpo", logits, batch).loss, logits)
    onehot = torch.nn.functional.one_hot(batch.response_ids, 7).double()
    dlogp = (onehot - torch.softmax(logits.detach() / 0.6, -1)) / 0.6
    expected = -batch.advantages[:, None, None] * dlogp / 2  # two valid tokens
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_tempered_logprobs_match_full(chunk):
    g = torch.Generator().manual_seed(2)
    B, T, H, V = 2, 7, 8, 17
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    tau = torch.tensor([0.7, 1.5], dtype=torch.float64)
    s = chunked_student_logprobs(hidden, W, ids, None, chunk_size=chunk, temperature=tau)
    torch.testing.assert_close(s.tempered_token_logprobs, _tempered(hidden @ W.T, ids, tau))
    (ga,) = torch.autograd.grad(s.tempered_token_logprobs.sum(), hidden)
    (gb,) = torch.autograd.grad(
        torch.log_softmax((hidden @ W.T) / tau[:, None, None], -1).gather(-1, ids[..., None]).sum(), hidden
    )
    torch.testing.assert_close(ga, gb)
    assert chunked_student_logprobs(hidden, W, ids, None, chunk_size=chunk).tempered_token_logprobs is None


def test_rollout_temperature_needs_tempered_student_logprobs_and_valid_values():
    logits, batch, _ = make()
    batch.rollout_logprobs = _tempered(logits, batch.response_ids, torch.full((3,), 0.7, dtype=torch.float64))
    batch.rollout_temperature = torch.full((3,), 0.7, dtype=torch.float64)
    untempered = gather_student_logprobs(logits, batch.response_ids, batch.teacher_topk_ids)
    with pytest.raises(ValueError, match="tempered_token_logprobs is missing"):
        compute_loss_from_logprobs(ObjectiveConfig(), untempered, batch)
    for bad, match in [(torch.zeros(3, dtype=torch.float64), "finite and > 0"), (torch.ones(2), r"\[3\]")]:
        batch.rollout_temperature = bad
        with pytest.raises(ValueError, match=match):
            loss_of("distil", logits, batch)
