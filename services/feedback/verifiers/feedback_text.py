"""Environment feedback text for the teacher, following the SDPO / LiveCodeBench
conventions: the first runtime (or compile) error with the user's frames and the input,
else the first timeout (or memory / output limit) with its input, else the format problem
(no code block, cut off), else up to two wrong answers, shortest input first, each with
input, output and expected. Head+tail truncation keeps the end of tracebacks. Everything
passing gives no feedback (None)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from .extract import FORMAT_CUT_OFF, FORMAT_NO_CODE
from .protocol import TestOutcome


class FeedbackTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_lines: int = Field(default=8, ge=1)
    line_chars: int = Field(default=250, ge=10)
    output_chars: int = Field(default=250, ge=10)
    total_chars: int = Field(default=2000, ge=100)
    error_frames: int = Field(default=3, ge=1, description="last frames of the user's code in a traceback")
    wrong_answers: int = Field(default=2, ge=1)


def head_tail(text: str, limit: int, marker: str = "\n...\n") -> str:
    """Keep the start and the end of ``text`` within ``limit`` characters."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(marker), 2)
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :]


def _clip_input(text: str, cfg: FeedbackTextConfig) -> str:
    lines = text.splitlines()
    clipped = [head_tail(line, cfg.line_chars, " ... ") for line in lines]
    if len(clipped) > cfg.input_lines:
        half = cfg.input_lines // 2
        clipped = clipped[:half] + ["..."] + clipped[len(clipped) - (cfg.input_lines - half) :]
    return "\n".join(clipped)


_FRAME = re.compile(r'^  File "([^"]*)", line \d+')
_USER_FILES = ("/sandbox/main.py", "/sandbox/solution.py", "main.py", "solution.py")


def user_traceback(stderr: str, frames: int, user_files: Sequence[str] = _USER_FILES) -> str:
    """The traceback's header, its last ``frames`` frames in the user's code, and the
    exception lines; harness and library frames are dropped."""
    lines = stderr.rstrip().splitlines()
    start = max(
        (i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
        default=None,
    )
    if start is None:
        return "\n".join(lines[-10:])
    body = lines[start + 1 :]
    blocks: list[list[str]] = []
    tail: list[str] = []
    for line in body:
        match = _FRAME.match(line)
        if match:
            blocks.append([line])
        elif line.startswith("    ") and blocks and not tail:
            blocks[-1].append(line)
        else:
            tail.append(line)
    user = [b for b in blocks if any(b[0].startswith(f'  File "{name}"') for name in user_files)]
    kept = [line for block in user[-frames:] for line in block]
    return "\n".join([lines[start], *kept, *tail])


def _error_text(outcome: TestOutcome, cfg: FeedbackTextConfig) -> str:
    kind = "Compilation error" if outcome.status == "CE" else "Runtime error"
    parts = [f"{kind}:", head_tail(user_traceback(outcome.error, cfg.error_frames), cfg.total_chars // 2)]
    if outcome.input:
        parts.append(f"Last input:\n{_clip_input(outcome.input, cfg)}")
    return "\n".join(parts)


_LIMIT_NAMES = {"TLE": "Time limit exceeded", "MLE": "Memory limit exceeded", "OLE": "Output limit exceeded"}


def _limit_text(outcome: TestOutcome, cfg: FeedbackTextConfig) -> str:
    text = f"{_LIMIT_NAMES[outcome.status]}"
    if outcome.error:
        text += f" ({outcome.error})"
    if outcome.input:
        text += f" on input:\n{_clip_input(outcome.input, cfg)}"
    return text + "."


def _format_text(problem: str) -> str:
    if problem == FORMAT_CUT_OFF:
        return "Your answer was cut off before the code was complete. Write a shorter answer that ends with the full code."
    if problem == FORMAT_NO_CODE:
        return "Your answer did not contain code. Put your code in a ```python``` block."
    return f"Your answer could not be graded: {problem}."


def _wrong_text(outcome: TestOutcome, cfg: FeedbackTextConfig) -> str:
    parts = ["Wrong answer."]
    if outcome.input:
        parts.append(f"Input:\n{_clip_input(outcome.input.rstrip(), cfg)}")
    if outcome.output or not outcome.error:
        parts.append(f"Your output:\n{head_tail(outcome.output.rstrip(), cfg.output_chars)}")
    if outcome.expected:
        parts.append(f"Expected:\n{head_tail(outcome.expected.rstrip(), cfg.output_chars)}")
    if outcome.error:
        parts.append(head_tail(outcome.error, cfg.output_chars))
    return "\n".join(parts)


def build_feedback(
    outcomes: Sequence[TestOutcome], *, format_error: str | None = None, cfg: FeedbackTextConfig | None = None
) -> str | None:
    cfg = cfg or FeedbackTextConfig()
    text: str | None = None
    errors = [o for o in outcomes if o.status in ("RE", "CE")]
    limits = [o for o in outcomes if o.status in _LIMIT_NAMES]
    wrong = [o for o in outcomes if o.status == "WA"]
    sandbox = [o for o in outcomes if o.status == "SANDBOX_ERROR"]
    if errors:
        text = _error_text(errors[0], cfg)
    elif limits:
        text = _limit_text(limits[0], cfg)
    elif format_error:
        text = _format_text(format_error)
    elif wrong:
        shortest = sorted(wrong, key=lambda o: (len(o.input), o.index))[: cfg.wrong_answers]
        text = "\n\n".join(_wrong_text(o, cfg) for o in shortest)
    elif sandbox:
        return None  # our fault, not the model's: no feedback
    if text is None:
        return None
    return head_tail(text, cfg.total_chars)
