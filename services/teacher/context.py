"""Teacher context for one item: the template's rewritten prompt + the response ids as they are."""

from __future__ import annotations

from distil.templates import TeacherContext, build_teacher_context, teacher_prompt

from .base import ScoreItem
from .config import _Common


def teacher_context(
    tokenizer, item: ScoreItem, cfg: _Common, *, solution: str | None = None
) -> TeacherContext | None:
    """None when the item carries no teacher signal (no solution, no feedback)."""
    user = teacher_prompt(
        item.prompt,
        solution=solution if solution is not None else item.solution,
        feedback=item.feedback,
        config=cfg.template,
    )
    if user is None or not item.response_ids:
        return None
    return build_teacher_context(
        tokenizer, item.messages, user, item.response_ids, max_length=cfg.max_length, config=cfg.template
    )
