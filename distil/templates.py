"""Teacher-context construction for feedback-conditioned self-teachers.

The teacher sees the original prompt rewritten with privileged information (a successful
sibling's solution, environment feedback, or a reference solution), then the student's
response token ids appended unchanged. The layout follows the SDPO reference templates
(see docs/objectives.md); everything here is pure and testable without services.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


class TemplateConfig(BaseModel):
    """How the teacher prompt is built. Defaults are the SDPO reference templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Literal["reprompt", "opsd"] = "reprompt"
    reprompt: str = "{prompt}{solution}{feedback}\n\nCorrectly solve the original question."
    solution: str = "\nCorrect solution:\n\n{solution}"
    feedback: str = "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback}"
    opsd: str = (
        "{prompt}\n\nHere is a reference solution to this problem:\n{solution}\n\n"
        "After understanding the reference solution, please try to solve this problem "
        "using your own approach below:"
    )
    # By default environment feedback is used only when no solution is available.
    feedback_only_without_solution: bool = True
    strip_thinking: bool = True
    enable_thinking: bool = False  # a job sets it from its top-level enable_thinking


def strip_think(text: str) -> str:
    """Remove ``<think>…</think>`` blocks (and an unterminated leading one)."""
    text = _THINK_BLOCK.sub("", text)
    if "<think>" in text and "</think>" not in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


def sibling_solution(
    texts: Sequence[str], success: Sequence[bool], index: int, *, strip_thinking: bool = True
) -> str | None:
    """The first successful response of the group other than ``index`` itself.

    A sample that succeeded never gets itself as the demonstration.
    """
    if len(texts) != len(success):
        raise ValueError(
            f"texts has {len(texts)} entries but success has {len(success)}; pass one per response"
        )
    if not 0 <= index < len(texts):
        raise ValueError(f"index {index} is outside the group of {len(texts)} responses")
    for j, (text, ok) in enumerate(zip(texts, success, strict=True)):
        if j != index and ok:
            return strip_think(text) if strip_thinking else text
    return None


def teacher_prompt(
    prompt: str,
    *,
    solution: str | None = None,
    feedback: str | None = None,
    config: TemplateConfig | None = None,
) -> str | None:
    """The rewritten user message for the teacher, or ``None`` when there is no signal.

    A sample with neither a solution nor feedback gets no teacher context (teacher mask 0):
    it is never scored against an unconditioned teacher.
    """
    cfg = config or TemplateConfig()
    solution = solution or None
    feedback = feedback or None
    if cfg.style == "opsd":
        if solution is None:
            return None
        return cfg.opsd.format(prompt=prompt, solution=solution)
    if solution is not None and cfg.feedback_only_without_solution:
        feedback = None
    if solution is None and feedback is None:
        return None
    return cfg.reprompt.format(
        prompt=prompt,
        solution=cfg.solution.format(solution=solution) if solution is not None else "",
        feedback=cfg.feedback.format(feedback=feedback) if feedback is not None else "",
    )


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the teacher context needs."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def chat_prompt_ids(
    tokenizer: ChatTokenizer, messages: Sequence[dict[str, str]], *, enable_thinking: bool
) -> list[int]:
    """Token ids of chat messages through the chat template with the generation prompt, as the
    rollout engine renders a prompt. ``enable_thinking`` is always passed: templates that know
    the switch (Qwen3) think when it is left out."""
    ids = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        add_generation_prompt=True,
        tokenize=True,
        enable_thinking=enable_thinking,
    )
    if hasattr(ids, "keys"):  # a BatchEncoding (transformers >= 5)
        ids = ids["input_ids"]
    return [int(t) for t in ids]


@dataclass(frozen=True)
class TeacherContext:
    """Token ids of the teacher's input; the student's response starts at ``response_start``."""

    input_ids: list[int]
    response_start: int
    truncated_tokens: int


def _split_chat(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], enable_thinking: bool
) -> tuple[str, str]:
    kwargs: dict[str, Any] = {"tokenize": False, "enable_thinking": enable_thinking}
    body = tokenizer.apply_chat_template(messages, add_generation_prompt=False, **kwargs)
    full = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
    if not full.startswith(body):
        # Templates that rewrite earlier turns when a generation prompt is added: keep it whole.
        return full, ""
    return body, full[len(body) :]


def build_teacher_context(
    tokenizer: ChatTokenizer,
    messages: Sequence[dict[str, str]],
    user_content: str,
    response_ids: Sequence[int],
    *,
    max_length: int,
    config: TemplateConfig | None = None,
) -> TeacherContext:
    """Chat-templated teacher prompt (last user message replaced) + the response ids as they are.

    The prompt part is truncated on the left so the whole fits in ``max_length``; the
    generation prompt and the response are never cut. Raises ``ValueError`` when even the
    generation prompt plus the response do not fit.
    """
    cfg = config or TemplateConfig()
    msgs = [dict(m) for m in messages]
    user_turns = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not user_turns:
        raise ValueError("messages has no user turn to replace; pass the student's chat messages")
    msgs[user_turns[-1]]["content"] = user_content
    body, gen = _split_chat(tokenizer, msgs, cfg.enable_thinking)
    body_ids = tokenizer.encode(body, add_special_tokens=False)
    gen_ids = tokenizer.encode(gen, add_special_tokens=False) if gen else []
    response = [int(t) for t in response_ids]
    budget = max_length - len(gen_ids) - len(response)
    if budget < 0:
        raise ValueError(
            f"teacher context cannot fit: generation prompt ({len(gen_ids)} tokens) + response "
            f"({len(response)} tokens) exceed max_length={max_length}; raise the teacher's max_length"
        )
    cut = max(0, len(body_ids) - budget)
    prompt_ids = body_ids[cut:] + gen_ids
    return TeacherContext(
        input_ids=prompt_ids + response, response_start=len(prompt_ids), truncated_tokens=cut
    )
