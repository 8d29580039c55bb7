"""What the feedback stage produces for one group (one prompt, its G responses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from distil.data import Task

from .verifiers.protocol import Grade, TestOutcome


class ResponseFeedback(BaseModel):
    """One response: its grade plus what the feedback sources added for the teacher."""

    index: int
    reward: float
    success: bool
    fraction_passed: float = 0.0
    tests: list[TestOutcome] = []
    format_error: str | None = None
    answer_key: str | None = None  # Grade.answer_key: what maj@k votes on
    feedback: str | None = None  # combined feedback text (environment, external), or None
    solution: str | None = None  # a demonstration (successful sibling or reference), or None
    texts: dict[str, str] = {}  # what each source contributed, by source kind
    external: str | None = None  # "answered" | "timed_out" | "failed" | None (not asked)

    @classmethod
    def from_grade(cls, index: int, grade: Grade) -> ResponseFeedback:
        return cls(
            index=index,
            reward=grade.reward,
            success=grade.success,
            fraction_passed=grade.fraction_passed,
            tests=grade.tests,
            format_error=grade.format_error,
            answer_key=grade.answer_key,
        )


class GroupFeedback(BaseModel):
    task_id: str
    responses: list[ResponseFeedback]
    counters: dict[str, int] = {}

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.responses]


@dataclass
class GroupContext:
    """Everything a feedback source may read or fill in for one group."""

    task: Task
    responses: list[str]
    grades: list[Grade]
    items: list[ResponseFeedback]
    job_id: str | None = None
    group_id: str | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
