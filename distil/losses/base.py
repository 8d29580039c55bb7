"""The objective protocol: one small class per objective, the learner stays name-blind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from distil.losses.batch import LossBatch
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs


class Objective(ABC):
    """An objective maps student log-probs and a ``LossBatch`` to a scalar loss and metrics.

    Class attributes describe what the objective needs, so callers (the learner, job
    validation) ask capabilities instead of branching on names.
    """

    name: ClassVar[str]
    # ObjectiveConfig fields this objective reads (others may not be set explicitly).
    fields: ClassVar[frozenset[str]] = frozenset()
    # Objective-specific defaults for fields declared ``None`` in ObjectiveConfig.
    defaults: ClassVar[dict[str, Any]] = {}
    needs_teacher: ClassVar[bool] = False  # teacher top-K ids + log-probs
    needs_teacher_logprobs: ClassVar[bool] = False  # cannot use a text-only / sampled-token teacher
    needs_advantages: ClassVar[bool] = False  # group-normalised advantages from rewards
    # Metrics that are means over samples; every other mean metric averages over the
    # objective's valid tokens (teacher-scored ones for a distillation objective).
    per_sample_metrics: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check(cls, cfg: ObjectiveConfig) -> None:
        """Reject settings that contradict the objective (called at config validation)."""
        return None

    @abstractmethod
    def loss(
        self, cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, normalizer: float | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the aggregated loss (differentiable) and float metrics."""
