"""SDPO: self-distillation with a reverse-KL default (coding setting of the paper's Table 3)."""

from distil.losses.jsd import GeneralizedJSD


class SDPO(GeneralizedJSD):
    name = "sdpo"
    defaults = {"alpha": 1.0}
