"""Bad input raises ValueError naming the field and what was expected; nothing broadcasts."""

from __future__ import annotations

import pydantic
import pytest
import torch

from distil.losses import (
    LossBatch,
    ObjectiveConfig,
    StudentLogprobs,
    compute_loss,
    compute_loss_from_logprobs,
)


def good(B=2, T=4, V=9, K=3):
    logits = torch.randn(B, T, V, requires_grad=True)
    lp, ids = torch.log_softmax(torch.randn(B, T, V), -1).topk(K, -1)
    return logits, dict(
        response_ids=torch.randint(0, V, (B, T)),
        response_mask=torch.ones(B, T, dtype=torch.bool),
        teacher_topk_ids=ids,
        teacher_topk_logprobs=lp,
    )


def run(name="distil", logits=None, **changes):
    base_logits, fields = good()
    fields.update(changes)
    return compute_loss(
        ObjectiveConfig(name=name), base_logits if logits is None else logits, LossBatch(**fields)
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"response_ids": torch.zeros(2, 5, dtype=torch.long)}, "response_ids"),
        ({"response_ids": torch.zeros(2, 4)}, "response_ids"),
        ({"response_ids": torch.zeros(4, dtype=torch.long)}, "response_ids"),
        ({"response_mask": torch.ones(2, 4)}, "response_mask"),
        ({"response_mask": torch.ones(1, 4, dtype=torch.bool)}, "response_mask"),
        ({"teacher_topk_ids": torch.zeros(2, 4, dtype=torch.long)}, "teacher_topk_ids"),
        ({"teacher_topk_logprobs": torch.zeros(2, 4, 2)}, "teacher_topk_logprobs"),
        ({"teacher_topk_logprobs": torch.zeros(2, 4, 3, dtype=torch.long)}, "teacher_topk_logprobs"),
        ({"rollout_logprobs": torch.zeros(2, 1)}, "rollout_logprobs"),
        ({"teacher_mask": torch.ones(3, dtype=torch.bool)}, "teacher_mask"),
        ({"teacher_mask": torch.ones(2)}, "teacher_mask"),
    ],
)
def test_shape_and_dtype_mismatches_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        run(**changes)


def test_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="response_ids.*outside the vocabulary"):
        run(response_ids=torch.full((2, 4), 9))
    with pytest.raises(ValueError, match="teacher_topk_ids.*outside the vocabulary"):
        run(teacher_topk_ids=torch.full((2, 4, 3), -1))
    # padding ids at masked positions are fine
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[:, -1] = False
    ids = torch.zeros(2, 4, dtype=torch.long)
    ids[:, -1] = -100
    assert torch.isfinite(run(response_ids=ids, response_mask=mask).loss)


def test_k_larger_than_vocabulary():
    with pytest.raises(ValueError, match="K=12 > vocabulary size V=9"):
        run(
            teacher_topk_ids=torch.zeros(2, 4, 12, dtype=torch.long),
            teacher_topk_logprobs=torch.full((2, 4, 12), -5.0),
        )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_teacher_logprobs(bad):
    _, fields = good()
    lp = fields["teacher_topk_logprobs"].clone()
    lp[1, 2, 0] = bad
    with pytest.raises(ValueError, match="teacher_topk_logprobs has NaN/inf"):
        run(teacher_topk_logprobs=lp)
    # ... unless that sample carries no teacher signal
    assert torch.isfinite(run(teacher_topk_logprobs=lp, teacher_mask=torch.tensor([True, False])).loss)


def test_teacher_logprobs_must_be_normalised_logprobs():
    with pytest.raises(ValueError, match="<= 0"):
        run(teacher_topk_logprobs=torch.full((2, 4, 3), 0.5))
    with pytest.raises(ValueError, match="sum to probability"):
        run(teacher_topk_logprobs=torch.full((2, 4, 3), -0.1))


def test_missing_inputs_per_objective():
    with pytest.raises(ValueError, match="teacher_topk_ids and teacher_topk_logprobs"):
        run(teacher_topk_ids=None)
    with pytest.raises(ValueError, match="advantages is required"):
        run("grpo")
    with pytest.raises(ValueError, match="advantages"):
        run("grpo", advantages=torch.ones(3))
    with pytest.raises(ValueError, match="group_ids is required"):
        compute_loss(ObjectiveConfig(credit_baseline="group_mean"), good()[0], LossBatch(**good()[1]))
    assert torch.isfinite(run("sft", teacher_topk_ids=None, teacher_topk_logprobs=None).loss)


def test_precomputed_credit_baseline_is_checked():
    logits, fields = good()
    cfg = ObjectiveConfig(credit_baseline="group_mean")
    # precomputed values replace group_ids (the siblings may sit in other micro-batches)
    assert torch.isfinite(
        compute_loss(cfg, logits, LossBatch(**fields, credit_baseline_values=torch.zeros(2, 4))).loss
    )
    with pytest.raises(ValueError, match=r"credit_baseline_values must have shape \[2,4\]"):
        compute_loss(cfg, logits, LossBatch(**fields, credit_baseline_values=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="credit_baseline_values has NaN"):
        compute_loss(
            cfg, logits, LossBatch(**fields, credit_baseline_values=torch.full((2, 4), float("nan")))
        )
    with pytest.raises(ValueError, match="credit_baseline_values is set but"):
        compute_loss(ObjectiveConfig(), logits, LossBatch(**fields, credit_baseline_values=torch.zeros(2, 4)))


def test_bad_logits():
    with pytest.raises(ValueError, match=r"student_logits must have shape \[B,T,V\]"):
        run(logits=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="response_ids"):
        run(logits=torch.zeros(3, 4, 9))
    with pytest.raises(ValueError, match="float"):
        run(logits=torch.zeros(2, 4, 9, dtype=torch.long))


def test_from_logprobs_checks_k():
    _, fields = good()
    student = StudentLogprobs(torch.zeros(2, 4, 5), torch.zeros(2, 4), 9)
    with pytest.raises(ValueError, match="K=3 but the student log-probs were gathered for K=5"):
        compute_loss_from_logprobs(ObjectiveConfig(), student, LossBatch(**fields))


def test_config_rejects_settings_the_objective_does_not_use():
    with pytest.raises(pydantic.ValidationError, match="does not use alpha"):
        ObjectiveConfig(name="distil", alpha=0.5)
    with pytest.raises(pydantic.ValidationError, match="does not use future_credit"):
        ObjectiveConfig(name="sdpo", future_credit=True)
    with pytest.raises(pydantic.ValidationError, match="use name='distil'"):
        ObjectiveConfig(name="ce", future_credit=True)
    with pytest.raises(pydantic.ValidationError, match="name"):
        ObjectiveConfig(name="ppo")
    with pytest.raises(pydantic.ValidationError, match="alpha"):
        ObjectiveConfig(name="sdpo", alpha=1.5)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ObjectiveConfig(nme="distil")


def test_config_defaults_follow_the_paper():
    d = ObjectiveConfig()
    assert (d.name, d.future_credit, d.length_normalize, d.topk_tail, d.is_clip, d.aggregation) == (
        "distil",
        True,
        True,
        True,
        2.0,
        "token_mean",
    )
    assert ObjectiveConfig(name="ce").future_credit is False
    g = ObjectiveConfig(name="grpo")
    assert (g.clip_low, g.clip_high) == (0.2, 0.28)
