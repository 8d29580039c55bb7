"""Pull the program out of a model response."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_PY_TAGS = {"python", "py", "python3", "py3"}

FORMAT_NO_CODE = "no ```python code block"
FORMAT_CUT_OFF = "cut off"


@dataclass(frozen=True)
class Extracted:
    code: str | None
    problem: str | None  # FORMAT_NO_CODE / FORMAT_CUT_OFF / None


def extract_code(
    response: str, *, rule: Literal["last", "first"] = "last", truncated: bool = False
) -> Extracted:
    """The ```python block chosen by ``rule`` (untagged blocks count when no tagged one
    exists). A response that hit the length limit, or whose last fence never closes, is
    reported as cut off when no complete block precedes the cut. Code inside closed
    ``<think>`` blocks does not count."""
    response = _THINK.sub("", response)
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(response)]
    python_blocks = [body for tag, body in blocks if tag in _PY_TAGS]
    candidates = python_blocks or [body for tag, body in blocks if tag == ""]
    unclosed = response.count("```") % 2 == 1
    if not candidates:
        if truncated or unclosed:
            return Extracted(None, FORMAT_CUT_OFF)
        return Extracted(None, FORMAT_NO_CODE)
    code = candidates[-1] if rule == "last" else candidates[0]
    return Extracted(code, None)
