"""The task format: one JSON object per line (see docs/feedback.md, "Task format").

A task is a prompt plus what decides whether a response solves it: tests for code (public
ones for training feedback, private ones for evaluation), an answer for math and multiple
choice, or a custom verifier endpoint. Expected outputs stay with the trusted grader and
never enter the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

VerifierKind = Literal["code", "math", "mcq", "custom"]


class StdioTest(BaseModel):
    """Feed ``input`` on stdin; stdout must match ``output`` line by line (numeric tolerance)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["stdio"] = "stdio"
    input: str = ""
    output: str


class CallTest(BaseModel):
    """Call ``fn(*args, **kwargs)``; the JSON-serialised result must equal ``expected``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["call"] = "call"
    fn: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    expected: Any = None


class CheckTest(BaseModel):
    """HumanEval style: ``code`` defines ``check(candidate)`` made of asserts, called with
    the function named ``entry_point``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["check"] = "check"
    code: str
    entry_point: str


TaskTest = Annotated[StdioTest | CallTest | CheckTest, Field(discriminator="kind")]


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    verifier: VerifierKind = "code"
    public_tests: list[TaskTest] = []
    private_tests: list[TaskTest] = []
    reference_solution: str | None = None
    answer: str | None = Field(default=None, description="math: final answer; mcq: the correct letter")
    choices: list[str] | None = Field(default=None, description="mcq: option texts, lettered A, B, C, ...")
    code_prefix: str = Field(
        default="",
        description="code: prepended to the response's code (e.g. HumanEval's signature and imports)",
    )
    verifier_url: str | None = Field(default=None, description="custom: the HTTP verifier endpoint")
    metadata: dict[str, Any] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if self.verifier == "code" and not (self.public_tests or self.private_tests):
            raise ValueError("a code task needs public_tests or private_tests")
        if self.verifier in ("math", "mcq") and self.answer is None:
            raise ValueError(f"a {self.verifier} task needs an answer")
        if self.verifier == "custom" and not self.verifier_url:
            raise ValueError("a custom task needs verifier_url")
        return self

    def tests(self, split: Literal["public", "private"]) -> list[StdioTest | CallTest | CheckTest]:
        """The tests of a split; a task with only one kind uses it for both."""
        chosen = self.public_tests if split == "public" else self.private_tests
        return list(chosen or self.public_tests or self.private_tests)


def parse_task(obj: dict[str, Any]) -> Task:
    return Task.model_validate(obj)


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; errors name the line and the field."""
    path = Path(path)
    tasks: list[Task] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = Task.model_validate(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(task)'}: {err['msg']}"
                    for err in exc.errors()
                )
                raise ValueError(f"{path}:{lineno}: invalid task: {problems}") from None
            if task.id in seen:
                raise ValueError(f"{path}:{lineno}: duplicate task id {task.id!r}")
            seen.add(task.id)
            tasks.append(task)
    return tasks
