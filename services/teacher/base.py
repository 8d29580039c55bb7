"""The teacher protocol: score a batch of student responses, one result (or None) per item."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from distil.bus import TeacherScores


@dataclass(slots=True)
class ScoreItem:
    """One student response to score, with what the teacher may condition on."""

    messages: list[dict[str, str]]  # the student's chat messages (last user turn = the prompt)
    prompt: str  # text of the last user turn
    response_ids: list[int]
    response_text: str = ""
    solution: str | None = None  # successful sibling or reference solution
    feedback: str | None = None  # environment / critic feedback
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ScoreStats:
    """Counters a teacher keeps (exported as metrics)."""

    scored: int = 0  # responses that got teacher scores
    skipped_no_signal: int = 0  # no solution/feedback: no context, not scored
    unavailable: int = 0  # teacher unreachable after retries: proceeds without signal
    failed_groups: int = 0  # groups that proceeded without any teacher signal because of that


class Teacher(Protocol):
    """A teacher kind. ``score`` never raises for an unreachable remote teacher: it returns
    None for the affected items and counts them (the group proceeds without signal)."""

    kind: str
    stats: ScoreStats

    async def score(self, items: list[ScoreItem]) -> list[TeacherScores | None]: ...

    async def update_weights(self, named_tensors, version: int, probe=None): ...

    def close(self) -> None: ...
