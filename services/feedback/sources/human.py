"""Human reviewers: responses selected for review (all, a seeded fraction, or only the
failures) wait in the job's review queue (``services.feedback.review_queue``) until a
reviewer answers through the gateway's review page or API, or until ``deadline_s`` has
passed; then the group goes on to the teacher with what the reviewer wrote merged into
its feedback. The waiting happens in the bus stage (``services.feedback.review_stage``),
so inside the grader this source only names itself."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distil.bus import Feedback

from ..group import GroupContext

Verdict = Literal["accept", "reject"]


class HumanSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["human"] = "human"
    selection: Literal["all", "fraction", "failures"] = Field(
        default="failures",
        description="which responses a person reviews: every one, a seeded random fraction, or those that failed",
    )
    fraction: float = Field(
        default=0.1, gt=0.0, le=1.0, description="share reviewed with selection 'fraction'"
    )
    seed: int = Field(default=0, description="seed of the 'fraction' draw (per group id and response)")
    deadline_s: float = Field(
        default=600.0,
        gt=0,
        le=7 * 86400,
        description="after this long the group goes on without human feedback",
    )
    keep_demonstration: bool = Field(
        default=False,
        description=(
            "keep an automatic demonstration (sibling, reference) next to a reviewer's text; by default "
            "the reviewer's words replace it, since the default teacher template shows feedback only "
            "when there is no solution"
        ),
    )
    verdict_sets_reward: bool = Field(
        default=False,
        description="accept -> reward 1 and success, reject -> reward 0 (replacing the verifier's)",
    )


class HumanSource:
    """Selection and merging for human review; ``apply`` adds nothing at grading time."""

    kind = "human"

    def __init__(self, config: HumanSourceConfig | None = None) -> None:
        self.config = config or HumanSourceConfig()

    def apply(self, ctx: GroupContext) -> None:
        """Nothing to add while grading: reviewers answer later, in the bus stage."""


def select(config: HumanSourceConfig, group_id: str, success: Sequence[bool]) -> list[int]:
    """Indices of the responses of group ``group_id`` that go to a reviewer.

    The 'fraction' draw depends only on (seed, group id, index), so a group that is graded
    again after a crash selects the same responses."""
    if config.selection == "all":
        return list(range(len(success)))
    if config.selection == "failures":
        return [i for i, ok in enumerate(success) if not ok]
    return [
        i
        for i in range(len(success))
        if random.Random(f"{config.seed}:{group_id}:{i}").random() < config.fraction
    ]


def fence(solution: str, verifier: str) -> str:
    """A code task's corrected solution as a ```python block (as the reference source does)."""
    if verifier == "code" and "```" not in solution:
        return f"```python\n{solution.rstrip()}\n```"
    return solution


class Review(BaseModel):
    """What a reviewer submits for one response (the review page and the API use this)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    verdict: Verdict = Field(description="accept: the response is right; reject: it is wrong")
    feedback: str = Field(
        default="", max_length=20_000, description="what was wrong (or right), for the teacher"
    )
    solution: str | None = Field(
        default=None, max_length=100_000, description="a corrected solution, used as the demonstration"
    )
    reviewer: str | None = Field(default=None, max_length=200, description="who reviewed (free text)")


def merge(feedback: Feedback, review: Review, config: HumanSourceConfig, verifier: str) -> None:
    """Put a reviewer's answer into a response's feedback: the text is joined after the
    other sources' feedback text, a corrected solution becomes the demonstration."""
    if review.feedback:
        feedback.feedback_text = (
            f"{feedback.feedback_text}\n\n{review.feedback}" if feedback.feedback_text else review.feedback
        )
    if review.solution:
        feedback.solution_text = fence(review.solution, verifier)
    elif review.feedback and not config.keep_demonstration:
        feedback.solution_text = ""
    if config.verdict_sets_reward:
        feedback.success = review.verdict == "accept"
        feedback.reward = 1.0 if feedback.success else 0.0
