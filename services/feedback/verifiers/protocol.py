"""The one protocol every verifier implements, and what a grade looks like."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel

from distil.data import Task

TestStatus = Literal["AC", "WA", "TLE", "MLE", "OLE", "RE", "CE", "SANDBOX_ERROR"]
Split = Literal["public", "private"]


class TestOutcome(BaseModel):
    """One test of one response. ``expected`` is filled in by the trusted parent only."""

    __test__ = False  # not a pytest class

    index: int
    status: TestStatus
    input: str = ""
    output: str = ""
    expected: str = ""
    error: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0


class Grade(BaseModel):
    """One response graded against one task."""

    reward: float
    success: bool
    fraction_passed: float = 0.0
    tests: list[TestOutcome] = []
    feedback: str | None = None  # environment feedback text (None when everything passed)
    format_error: str | None = None  # no code block / cut off / no answer found
    extracted: str | None = None  # the code or answer that was graded
    # What maj@k votes on: responses with equal keys gave the same answer (the normalised
    # final answer, the letter, for code the behaviour on the tests); None: no answer found.
    answer_key: str | None = None


class Verifier(Protocol):
    def grade(
        self, task: Task, response: str, *, split: Split = "public", truncated: bool = False
    ) -> Grade: ...
