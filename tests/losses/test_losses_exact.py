"""Exact checks against the paper: enumerate all trajectories of a tabular softmax policy.

The expected gradient of ``distil``'s per-trajectory loss must equal the exact gradient of
eq. (4), and ``ce`` must give only the local term.
"""

from __future__ import annotations

import math

import pytest
import torch

from distil.losses import (
    LossBatch,
    ObjectiveConfig,
    compute_loss,
    future_credits,
    gather_student_logprobs,
    group_credit_baseline,
)
from tests.losses.tabular import Tabular


def expected_grad(env: Tabular, cfg: ObjectiveConfig) -> torch.Tensor:
    """sum_y pi(y) * grad(loss(y)), losses token-summed (x H, since every y has length H)."""
    total = torch.zeros_like(env.theta)
    for y in env.trajectories():
        weight = env.log_prob(y).exp().detach()
        loss = compute_loss(cfg, env.logits(y), env.batch([y])).loss * env.H
        (g,) = torch.autograd.grad(loss, env.theta)
        total += weight * g
    return total


def eq4_objective(env: Tabular, *, tail: bool, local_only: bool = False) -> torch.Tensor:
    """L(theta) = E_{y ~ pi_theta} sum_t H(pi_T(s_t), pi_theta(s_t)); local_only freezes the state distribution."""
    total = torch.zeros((), dtype=torch.float64)
    for y in env.trajectories():
        p = env.log_prob(y).exp()
        if local_only:
            p = p.detach()
        total = total + p * sum(env.state_ce(tuple(y[:t]), tail=tail) for t in range(env.H))
    return total


@pytest.mark.parametrize(
    ("vocab", "horizon", "topk", "tail"),
    [(3, 2, None, True), (3, 3, None, True), (4, 3, 2, True), (4, 2, 2, False)],
)
def test_distil_expected_gradient_equals_eq4(vocab, horizon, topk, tail):
    env = Tabular(vocab, horizon, seed=vocab * 10 + horizon, topk=topk)
    cfg = ObjectiveConfig(name="distil", length_normalize=False, topk_tail=tail)
    (exact,) = torch.autograd.grad(eq4_objective(env, tail=tail), env.theta)
    got = expected_grad(env, cfg)
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("vocab", "horizon", "topk"), [(3, 3, None), (4, 2, 2)])
def test_ce_gives_only_the_local_term(vocab, horizon, topk):
    env = Tabular(vocab, horizon, seed=7, topk=topk)
    (local,) = torch.autograd.grad(eq4_objective(env, tail=True, local_only=True), env.theta)
    (full,) = torch.autograd.grad(eq4_objective(env, tail=True), env.theta)
    got = expected_grad(env, ObjectiveConfig(name="ce"))
    torch.testing.assert_close(got, local, rtol=1e-9, atol=1e-11)
    # and the future term it drops is not negligible in this problem
    assert (full - local).abs().max() > 1e-2


def test_length_normalized_credit_matches_its_closed_form():
    """With normalisation, C_t is the mean CE over the later tokens (Algorithm 1, line 7)."""
    env = Tabular(3, 3, seed=3)
    got = expected_grad(env, ObjectiveConfig(name="distil"))
    total = torch.zeros((), dtype=torch.float64)
    for y in env.trajectories():
        p = env.log_prob(y).exp().detach()
        ces = [env.state_ce(tuple(y[:t]), tail=True) for t in range(env.H)]
        for t in range(env.H):
            later = ces[t + 1 :]
            credit = (sum(c.detach() for c in later) / max(len(later), 1)) if later else 0.0
            step_lp = torch.log_softmax(env.theta[env.index[tuple(y[:t])]], -1)[y[t]]
            total = total + p * (ces[t] + credit * step_lp)
    (want,) = torch.autograd.grad(total, env.theta)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_group_baseline_keeps_the_estimator_unbiased():
    """Enumerate pairs of i.i.d. trajectories of one group: the baseline changes no expectation."""
    env = Tabular(3, 2, seed=11)
    plain = ObjectiveConfig(name="distil", length_normalize=False)
    based = ObjectiveConfig(name="distil", length_normalize=False, credit_baseline="group_mean")
    ys = env.trajectories()
    g_plain = torch.zeros_like(env.theta)
    g_based = torch.zeros_like(env.theta)
    for a in ys:
        for b in ys:
            w = (env.log_prob(a) + env.log_prob(b)).exp().detach()
            logits = torch.cat([env.logits(a), env.logits(b)])
            batch = env.batch([a, b])
            batch.group_ids = torch.tensor([0, 0])
            for cfg, acc in ((plain, g_plain), (based, g_based)):
                (g,) = torch.autograd.grad(compute_loss(cfg, logits, batch).loss, env.theta)
                acc += w * g
    torch.testing.assert_close(g_based, g_plain, rtol=1e-9, atol=1e-11)


def sibling_baselines(env: Tabular, cfg: ObjectiveConfig, ys) -> torch.Tensor:
    """Leave-one-out baseline [B,T] of a group, from each sample's credit computed on its own
    (no gradient), as the learner's pre-pass does before splitting samples into micro-batches."""
    credits, masks = [], []
    with torch.no_grad():
        for y in ys:
            batch = env.batch([y])
            c, m = future_credits(
                cfg, gather_student_logprobs(env.logits(y), batch.response_ids, batch.teacher_topk_ids), batch
            )
            credits.append(c)
            masks.append(m)
    return group_credit_baseline(torch.cat(credits), torch.cat(masks), torch.zeros(len(ys), dtype=torch.long))


def test_precomputed_sibling_baseline_has_zero_expected_gradient():
    """Each sample scored alone (as in its own micro-batch) with the baseline computed over the
    whole group beforehand: the baseline term -b_t * grad log pi(y_t) has expected gradient 0,
    so the expected gradient equals the plain estimator's, and it equals the in-batch one."""
    env = Tabular(3, 2, seed=11)
    plain = ObjectiveConfig(name="distil", length_normalize=False)
    based = ObjectiveConfig(name="distil", length_normalize=False, credit_baseline="group_mean")
    ys = env.trajectories()
    g_plain = torch.zeros_like(env.theta)
    g_based = torch.zeros_like(env.theta)
    g_term = torch.zeros_like(env.theta)
    for a in ys:
        for b in ys:
            w = (env.log_prob(a) + env.log_prob(b)).exp().detach()
            base = sibling_baselines(env, based, [a, b])
            assert base.abs().sum() > 0
            whole = env.batch([a, b])
            whole.group_ids = torch.tensor([0, 0])
            logits = torch.cat([env.logits(a), env.logits(b)])
            in_batch = compute_loss(based, logits, whole).loss
            split = 0.0
            for i, y in enumerate((a, b)):
                one = env.batch([y])
                (gp,) = torch.autograd.grad(
                    compute_loss(plain, env.logits(y), one, normalizer=2 * env.H).loss, env.theta
                )
                one.credit_baseline_values = base[i : i + 1]
                split = split + compute_loss(based, env.logits(y), one, normalizer=2 * env.H).loss
                g_plain += w * gp
                lp = torch.log_softmax(env.logits(y), -1).gather(-1, one.response_ids[..., None])[..., 0]
                (gt,) = torch.autograd.grad((base[i : i + 1] * lp).sum(), env.theta)
                g_term += w * gt
            torch.testing.assert_close(split, in_batch, rtol=1e-12, atol=1e-12)
            (gb,) = torch.autograd.grad(split, env.theta)
            g_based += w * gb
    torch.testing.assert_close(g_term, torch.zeros_like(g_term), rtol=0, atol=1e-12)
    torch.testing.assert_close(g_based, g_plain, rtol=1e-9, atol=1e-11)


# --- The paper's Appendix A examples, checked through the API -------------------------

BANDIT_R = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
BANDIT_STUDENT = torch.tensor([1 / 20, 9 / 20, 1 / 2], dtype=torch.float64)
BANDIT_TEACHER = torch.tensor([3 / 10, 1 / 20, 13 / 20], dtype=torch.float64)


def bandit_reward_rate(name: str, **kw) -> float:
    """First-order change in J per unit step of a natural-gradient step on the objective's loss.

    For softmax logits z, the NPG direction is d_a = (dL/dz_a) / p_a (Lemma 1), and
    dJ/deta = -sum_a r_a p_a (d_a - E_p d).
    """
    z = BANDIT_STUDENT.log().clone().requires_grad_()
    batch = LossBatch(
        response_ids=torch.tensor([[0]]),  # the sampled action does not matter: T=1, no future credit
        response_mask=torch.ones(1, 1, dtype=torch.bool),
        teacher_topk_ids=torch.arange(3)[None, None],
        teacher_topk_logprobs=BANDIT_TEACHER.log()[None, None],
    )
    (g,) = torch.autograd.grad(compute_loss(ObjectiveConfig(name=name, **kw), z[None, None], batch).loss, z)
    p = BANDIT_STUDENT
    d = g / p
    return float(-(BANDIT_R * p * (d - (p * d).sum())).sum())


def test_prop2_reverse_kl_step_decreases_reward_but_distil_improves():
    j_student = float((BANDIT_R * BANDIT_STUDENT).sum())
    j_teacher = float((BANDIT_R * BANDIT_TEACHER).sum())
    assert j_student == pytest.approx(0.275) and j_teacher == pytest.approx(0.325)
    # SDPO's reverse KL: dJ = -eta Cov(r, log pi/pi_T) = -0.1936 eta (Appendix A.3)
    assert bandit_reward_rate("sdpo") == pytest.approx(-0.1936, abs=5e-4)
    # DistIL's forward cross-entropy: dJ = eta * (J(pi_T) - J(pi)) = +0.05 eta (Proposition 4)
    assert bandit_reward_rate("distil") == pytest.approx(j_teacher - j_student, abs=1e-12)
    # the Jensen-Shannon member of the family also decreases reward here; its forward-KL
    # member (OPSD's default) has the same first-order step as DistIL on one token
    assert bandit_reward_rate("sdpo", alpha=0.5) < -0.01
    assert bandit_reward_rate("opsd") == pytest.approx(j_teacher - j_student, abs=1e-12)


def prop3_logits(u: torch.Tensor, v: torch.Tensor, y1: int) -> torch.Tensor:
    zero = torch.zeros((), dtype=torch.float64)
    step1 = torch.stack([u, zero, zero])
    step2 = torch.stack([v, zero, zero]) if y1 == 0 else torch.zeros(3, dtype=torch.float64)
    return torch.stack([step1, step2])[None]


def test_prop3_local_gradient_is_zero_on_the_first_decision():
    """Appendix A.4: at (u,v)=(0,0) the local (SDPO) gradient on u vanishes, the sequence one is 2/9 D(0)."""
    sq2 = math.sqrt(2.0)
    R = torch.tensor([1 / 4, (3 + 2 * sq2) / 8, (3 - 2 * sq2) / 8], dtype=torch.float64)
    U = torch.full((3,), 1 / 3, dtype=torch.float64)
    u = torch.zeros((), dtype=torch.float64, requires_grad=True)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def expected(name: str) -> torch.Tensor:
        total = torch.zeros(2, dtype=torch.float64)
        for y1 in range(3):
            for y2 in range(3):
                logits = prop3_logits(u, v, y1)
                p = (torch.log_softmax(logits[0, 0], -1)[y1] + torch.log_softmax(logits[0, 1], -1)[y2]).exp()
                teacher = torch.stack([U, R if y1 == 0 else U]).log()
                batch = LossBatch(
                    response_ids=torch.tensor([[y1, y2]]),
                    response_mask=torch.ones(1, 2, dtype=torch.bool),
                    teacher_topk_ids=torch.arange(3).expand(1, 2, 3),
                    teacher_topk_logprobs=teacher[None],
                )
                loss = compute_loss(ObjectiveConfig(name=name), logits, batch).loss * 2
                grads = torch.autograd.grad(loss, (u, v), allow_unused=True)
                total += p.detach() * torch.stack([g if g is not None else torch.zeros(()) for g in grads])
        return total

    local_u = expected("sdpo")[0]
    assert abs(float(local_u)) < 1e-12

    # exact sequence-level KL(pi_{u,v} || pi_T) and its gradient on u: p'(0) D(0) = (2/9) D(0)
    p_a = torch.softmax(torch.stack([u, torch.zeros(()), torch.zeros(())]).double(), -1)
    q = torch.softmax(torch.stack([v, torch.zeros(()), torch.zeros(())]).double(), -1)
    seq = (p_a * (p_a / U).log()).sum() + p_a[0] * (q * (q / R).log()).sum()
    (du,) = torch.autograd.grad(seq, u)
    d0 = float(1 / 3 * math.log(4 / 3) + 2 / 3 * math.log(8 / 3))
    assert float(du) == pytest.approx(2 / 9 * d0, rel=1e-12)
    assert float(du) > 0


# --- rollout temperature: the score term is of the policy that sampled -----------------


def test_distil_expected_gradient_equals_eq4_for_the_tempered_policy():
    """Samples from pi^tau (tau = 0.7), ratio 1 (fresh data): the expected gradient of the
    per-trajectory loss equals the exact gradient of eq. (4) with the trajectories drawn from
    pi^tau, L(theta) = E_{y ~ pi^tau_theta} sum_t H(pi_T(s_t), pi_theta(s_t)). With the
    temperature-1 log-prob in the credit term it would be off by C * (pi^tau - pi_1)."""
    tau = 0.7
    env = Tabular(3, 3, seed=5)
    cfg = ObjectiveConfig(name="distil", length_normalize=False)
    exact_obj = torch.zeros((), dtype=torch.float64)
    got = torch.zeros_like(env.theta)
    for y in env.trajectories():
        p = env.log_prob(y, tau).exp()
        exact_obj = exact_obj + p * sum(env.state_ce(tuple(y[:t]), tail=True) for t in range(env.H))
        logits = env.logits(y)
        batch = env.batch([y])
        batch.rollout_temperature = torch.tensor([tau], dtype=torch.float64)
        batch.rollout_logprobs = torch.log_softmax(logits.detach() / tau, -1).gather(
            -1, batch.response_ids[..., None]
        )[..., 0]
        (g,) = torch.autograd.grad(compute_loss(cfg, logits, batch).loss * env.H, env.theta)
        got += p.detach() * g
    (exact,) = torch.autograd.grad(exact_obj, env.theta)
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-11)


def test_constant_credit_has_zero_expected_gradient_at_a_temperature():
    """The score term alone, with a constant credit (teacher CE held fixed by stopping the
    local term): E_{y ~ pi^tau}[C * grad log pi^tau(y_t)] = 0, so a one-step policy whose
    future is a second step with a state-independent teacher gets only its local gradient."""
    tau = 0.7
    env = Tabular(3, 2, seed=9)
    # the second step's teacher and student are the same at every state: the credit of
    # step 0 is one constant, so the only gradient left on the first state is the local one
    first = env.index[()]
    with torch.no_grad():
        for y0 in range(env.V):
            env.theta[env.index[(y0,)]] = env.theta[env.index[(0,)]]
            env.teacher_logp[env.index[(y0,)]] = env.teacher_logp[env.index[(0,)]]
    cfg = ObjectiveConfig(name="distil", length_normalize=False)
    (local,) = torch.autograd.grad(env.state_ce((), tail=True), env.theta)
    got = torch.zeros_like(env.theta)
    for y in env.trajectories():
        p = env.log_prob(y, tau).exp().detach()
        logits = env.logits(y)
        batch = env.batch([y])
        batch.rollout_temperature = torch.tensor([tau], dtype=torch.float64)
        batch.rollout_logprobs = torch.log_softmax(logits.detach() / tau, -1).gather(
            -1, batch.response_ids[..., None]
        )[..., 0]
        (g,) = torch.autograd.grad(compute_loss(cfg, logits, batch).loss * env.H, env.theta)
        got += p * g
    torch.testing.assert_close(got[first], local[first], rtol=1e-9, atol=1e-11)
