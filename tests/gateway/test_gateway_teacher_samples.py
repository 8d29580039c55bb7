"""A black-box ``sampled_tokens`` teacher sends samples a ~ pi_T, not log-probs (#22 item 9).

The objective's ``teacher_samples`` mode follows from the teacher kind at submission: the
loss is then the sample estimate -1/K sum_k log pi(a_k) whatever ``topk_tail`` says. Before,
the objective kept ``teacher_samples=False``; with ``topk_tail=False`` the K sampled ids were
renormalised among themselves, and K = 1 gave CE = 0 and no gradient. A contradictory
explicit setting is refused with the field path, and the teacher-student KL (which samples
cannot give) is reported as not defined.
"""

from __future__ import annotations

import math

import pytest
import torch
from fastapi.testclient import TestClient

from distil.gateway.app import create_app
from distil.gateway.spec import validate_spec
from distil.jobs import JobStore
from distil.losses import LossBatch, ObjectiveConfig, compute_loss, sampled_teacher_targets
from services.learner.jobs import LearnerJobSpec
from tests.gateway.spec_errors import errors_of

SAMPLED = {"kind": "black_box", "url": "http://t", "form": "sampled_tokens", "samples_per_position": 1}
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def learner_objective(doc) -> ObjectiveConfig:
    """The objective as the learner receives it: validated, dumped without unset fields (as
    the driver hands it on) and validated again by the learner's job spec."""
    spec, _ = validate_spec(doc)
    return LearnerJobSpec.model_validate(
        {"job_id": "j", "model": "m", "steps": 1, "objective": spec.objective.model_dump(exclude_unset=True)}
    ).objective


@pytest.mark.parametrize("name", ["distil", "ce"])
@pytest.mark.parametrize("tail", [False, None])
def test_one_sample_per_position_gives_minus_log_pi_of_the_sample_whatever_the_tail(name, tail):
    objective = {"name": name} | ({} if tail is None else {"topk_tail": tail})
    cfg = learner_objective({"objective": objective, "teacher": SAMPLED})
    g = torch.Generator().manual_seed(0)
    B, T, V = 2, 5, 11
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64).requires_grad_()
    sampled = torch.randint(0, V, (B, T, 1), generator=g)  # K = 1 teacher sample per position
    ids, lps = sampled_teacher_targets(sampled)
    batch = LossBatch(
        response_ids=torch.randint(0, V, (B, T), generator=g),
        response_mask=torch.ones(B, T, dtype=torch.bool),
        teacher_topk_ids=ids,
        teacher_topk_logprobs=lps,
    )
    out = compute_loss(cfg, logits, batch)
    want = -torch.log_softmax(logits.detach(), -1).gather(-1, sampled)[..., 0]  # -log pi(a), a ~ pi_T
    assert out.metrics["ce_mean"] == pytest.approx(float(want.mean()), rel=1e-6)
    assert out.metrics["ce_mean"] > 0.1
    (grad,) = torch.autograd.grad(out.loss, logits)
    assert grad.abs().max() > 1e-3
    if name == "ce":  # the local term alone: its gradient is that of the mean -log pi(a)
        logits2 = logits.detach().clone().requires_grad_()
        ref = -torch.log_softmax(logits2, -1).gather(-1, sampled).mean()
        (ref_grad,) = torch.autograd.grad(ref, logits2)
        torch.testing.assert_close(grad, ref_grad)
    assert cfg.teacher_samples
    # KL(pi_T || pi) needs the teacher's log-probs, which samples do not give: not reported,
    # and the metrics say so.
    assert "kl_teacher_student" not in out.metrics
    assert out.metrics["teacher_samples"] == 1.0


def test_a_teacher_with_log_probs_keeps_the_distribution_mode():
    cfg = learner_objective({"objective": {"name": "distil", "topk_tail": False}})  # self_ema
    assert not cfg.teacher_samples and not cfg.topk_tail


@pytest.mark.parametrize(
    "doc, loc",
    [
        ({"objective": {"teacher_samples": False}, "teacher": SAMPLED}, "objective.teacher_samples"),
        ({"objective": {"teacher_samples": True}}, "objective.teacher_samples"),
        (
            {"objective": {"teacher_samples": True}, "teacher": {"kind": "external", "url": "http://t"}},
            "objective.teacher_samples",
        ),
        ({"objective": {"topk_tail": True}, "teacher": SAMPLED}, "objective.topk_tail"),
    ],
)
def test_a_contradictory_explicit_setting_is_refused_with_the_field_path(doc, loc):
    errors = errors_of(doc)
    assert set(errors) == {loc}, errors
    assert "sampled_tokens" in errors[loc]


def test_http_submission_stores_the_derived_mode_and_refuses_a_contradiction(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    with TestClient(create_app(store, TOKEN)) as client:
        r = client.post(
            "/v1/jobs", headers=AUTH, json={"teacher": SAMPLED, "objective": {"topk_tail": False}}
        )
        assert r.status_code == 201, r.text
        stored = store.get(r.json()["id"]).spec
        assert stored["objective"] == {"topk_tail": False, "teacher_samples": True}
        validate_spec(stored)  # the driver validates the stored spec again: it must still pass
        r = client.post(
            "/v1/jobs", headers=AUTH, json={"teacher": SAMPLED, "objective": {"teacher_samples": False}}
        )
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == ["objective.teacher_samples"]
    store.close()


def test_grpo_and_sft_with_a_sampled_teacher_are_left_alone():
    """Objectives without a teacher term have no teacher_samples field: nothing to derive."""
    for name in ("grpo", "sft"):
        spec, _ = validate_spec({"objective": {"name": name}, "teacher": SAMPLED})
        assert "teacher_samples" not in spec.objective.model_fields_set


def test_k_samples_estimate_is_the_mean_minus_log_pi_over_them():
    """K = 3 with a repeated id: each sample counts once (weight 1/K), no renormalisation."""
    cfg = learner_objective({"objective": {"name": "ce", "topk_tail": False}, "teacher": SAMPLED})
    logits = torch.randn(1, 1, 7, dtype=torch.float64)
    sampled = torch.tensor([[[2, 2, 5]]])
    ids, lps = sampled_teacher_targets(sampled)
    batch = LossBatch(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), ids, lps)
    lp = torch.log_softmax(logits[0, 0], -1)
    want = -(2 * lp[2] + lp[5]) / 3
    assert float(compute_loss(cfg, logits, batch).loss) == pytest.approx(float(want), rel=1e-6)
    assert math.isfinite(float(want))
