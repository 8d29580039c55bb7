"""``ObjectiveConfig``: which objective to optimise and its switches.

Fields left unset take the chosen objective's default (the paper's, see
docs/objectives.md); each default is written once, either here (shared by every objective
that uses the field) or in the objective's class (``Objective.defaults``). Setting a field
the chosen objective does not use is an error rather than a silent no-op.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ObjectiveName = Literal["distil", "ce", "sdpo", "opsd", "grpo", "sft"]


class ObjectiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ObjectiveName = "distil"

    # Distillation objectives (distil, ce, sdpo, opsd): support of the teacher distribution.
    topk_tail: bool = Field(
        default=True,
        description="Add one bucket with the mass outside the teacher's top-K (off: renormalise over K).",
    )
    # DistIL family (distil, ce).
    teacher_samples: bool = Field(
        default=False,
        description=(
            "teacher_topk_* hold K tokens sampled from a black-box teacher with weight 1/K each "
            "(the sample estimate of the forward CE); no renormalisation, no tail bucket."
        ),
    )
    future_credit: bool | None = Field(
        default=None, description="Future-credit term of eq. (5); distil: on, ce: off."
    )
    length_normalize: bool = Field(
        default=True,
        description="Divide the future credit by the number of later valid tokens (Algorithm 1).",
    )
    credit_baseline: Literal["none", "group_mean"] = Field(
        default="none",
        description="Subtract the leave-one-out mean credit of the same group at the same position.",
    )
    # Generalised Jensen-Shannon family (sdpo, opsd).
    alpha: float | None = Field(
        default=None, ge=0.0, le=1.0, description="0 = forward KL(T||S), 1 = reverse KL(S||T), 0.5 = JS."
    )
    # Truncated importance weights against the rollout policy (distillation objectives).
    is_clip: float | None = Field(
        default=2.0, gt=0.0, description="Upper bound of the IS weight; None = unclipped."
    )
    # GRPO.
    clip_low: float = Field(default=0.2, ge=0.0, lt=1.0)
    clip_high: float = Field(default=0.28, ge=0.0)
    # All objectives.
    aggregation: Literal["token_mean", "seq_mean"] = "token_mean"

    @model_validator(mode="after")
    def _resolve_defaults(self) -> ObjectiveConfig:
        from distil.losses.registry import objective_class

        cls = objective_class(self.name)
        unused = sorted(self.model_fields_set - cls.fields - {"name", "aggregation"})
        if unused:
            raise ValueError(
                f"objective {self.name!r} does not use {', '.join(unused)}; "
                f"its settings are: {', '.join(sorted(cls.fields | {'aggregation'}))}"
            )
        cls.check(self)
        for key, value in cls.defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self
