"""SFT: cross-entropy on the given tokens (e.g. reference solutions)."""

from __future__ import annotations

from distil.losses.base import Objective
from distil.losses.batch import LossBatch
from distil.losses.common import aggregate, token_mask
from distil.losses.config import ObjectiveConfig
from distil.losses.support import StudentLogprobs


class SFT(Objective):
    name = "sft"

    def loss(
        self, cfg: ObjectiveConfig, student: StudentLogprobs, batch: LossBatch, normalizer: float | None
    ):
        tok_lp = student.token_logprobs
        mask = token_mask(batch, tok_lp.dtype, use_teacher_mask=False)
        loss = aggregate(-tok_lp, mask, cfg, normalizer)
        return loss, {"loss": float(loss.detach())}
