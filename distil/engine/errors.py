"""Errors of the engine wrapper. Each says what was wrong and what to do."""

from __future__ import annotations


class EngineError(RuntimeError):
    """Base class of engine-wrapper errors."""


class PromptTooLong(EngineError, ValueError):
    """The prompt leaves no room in the context window."""


class WeightVersionError(EngineError):
    """A weight update arrived out of order (older than what the engine runs)."""


class ProbeMismatch(EngineError):
    """After a weight update the engine's log-probs on the probe differ from the learner's."""

    def __init__(self, message: str, *, expected_version: int, engine_version: int, error: float) -> None:
        super().__init__(message)
        self.expected_version = expected_version
        self.engine_version = engine_version
        self.error = error


class EngineTimeout(EngineError, TimeoutError):
    """An engine call did not finish within its limit."""
