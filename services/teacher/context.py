"""Teacher context for one item: the template's rewritten prompt + the response ids as they are."""

from __future__ import annotations

from distil.templates import TeacherContext, build_teacher_context, teacher_prompt

from .base import ScoreItem
from .config import _Common


def context_budget(max_length: int, max_model_len: int | None) -> int:
    """The longest teacher context a scorer can take: the configured ``max_length``, capped
    by the engine's context window less the one token a scoring request must generate
    (vLLM refuses a prompt of ``max_model_len`` tokens). The prompt part of a longer
    context is cut on the left; the response is never cut."""
    if max_model_len is None:
        return max_length
    return min(max_length, max_model_len - 1)


def teacher_context(
    tokenizer,
    item: ScoreItem,
    cfg: _Common,
    *,
    solution: str | None = None,
    max_length: int | None = None,
) -> TeacherContext | None:
    """None when the item carries no teacher signal (no solution, no feedback).
    ``max_length`` (default ``cfg.max_length``) is the budget, see :func:`context_budget`."""
    user = teacher_prompt(
        item.prompt,
        solution=solution if solution is not None else item.solution,
        feedback=item.feedback,
        config=cfg.template,
    )
    if user is None or not item.response_ids:
        return None
    return build_teacher_context(
        tokenizer,
        item.messages,
        user,
        item.response_ids,
        max_length=cfg.max_length if max_length is None else max_length,
        config=cfg.template,
    )
