"""OPSD: on-policy self-distillation, forward-KL default (the paper's Appendix C.2)."""

from distil.losses.jsd import GeneralizedJSD


class OPSD(GeneralizedJSD):
    name = "opsd"
    defaults = {"alpha": 0.0}
