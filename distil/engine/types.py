"""Plain results of the engine wrapper (numpy arrays, ready for the wire schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FinishReason = Literal["stop", "length", "abort"]


@dataclass(slots=True)
class Sample:
    """One sampled response."""

    token_ids: np.ndarray  # [T] int32
    logprobs: np.ndarray  # [T] float32: log-prob of each sampled token under the distribution sampled
    finish_reason: FinishReason
    text: str
    policy_version: int  # weights version the response was generated with

    @property
    def truncated(self) -> bool:
        """True when generation hit max_tokens (or the context window) before a stop."""
        return self.finish_reason == "length"


@dataclass(slots=True)
class TopK:
    """Top-K next-token ids and log-probs (normalised over the full vocabulary) per position."""

    ids: np.ndarray  # [T, K] int32, most likely first
    logprobs: np.ndarray  # [T, K] float32
    token_logprobs: np.ndarray  # [T] float32: log-prob of the token actually at each position


@dataclass(slots=True, frozen=True)
class Probe:
    """A sequence and the learner's per-token log-probs for it (positions 1..len-1), at temperature 1.

    ``expected_logprobs[i]`` is log p(token_ids[i + 1] | token_ids[: i + 1]).
    """

    token_ids: tuple[int, ...]
    expected_logprobs: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.token_ids) < 2:
            raise ValueError("a probe needs at least 2 token ids (log-probs start at the second)")
        if len(self.expected_logprobs) != len(self.token_ids) - 1:
            raise ValueError(
                f"probe has {len(self.token_ids)} token ids, so it needs {len(self.token_ids) - 1} "
                f"expected log-probs, got {len(self.expected_logprobs)}"
            )


@dataclass(slots=True, frozen=True)
class UpdateResult:
    """What a weight update did."""

    version: int
    applied: bool  # False: this version was already loaded and verified (idempotent repeat)
    tensors: int = 0
    chunks: int = 0
    load_s: float = 0.0
    verify_s: float = 0.0
    probe_error: float | None = None  # mean |Δ log-prob| on the probe, when one was given
