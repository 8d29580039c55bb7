"""CE: the local-only ablation of DistIL (no future credit; the paper's Fig. 3 baseline)."""

from __future__ import annotations

from distil.losses.config import ObjectiveConfig
from distil.losses.distil import DistIL


class CE(DistIL):
    name = "ce"
    fields = DistIL.fields - {"length_normalize", "credit_baseline"}
    defaults = {"future_credit": False}

    @classmethod
    def check(cls, cfg: ObjectiveConfig) -> None:
        super().check(cfg)
        if cfg.future_credit:
            raise ValueError(
                "objective 'ce' is DistIL without future credit; use name='distil' for future credit"
            )
