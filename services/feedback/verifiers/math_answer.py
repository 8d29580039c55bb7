"""Math verifier: extract the final answer, normalise it, and compare with the task's
answer -- as strings, then numerically, then symbolically (sympy, through the safe
parser in math_expr; model text is never evaluated as Python)."""

from __future__ import annotations

import cmath
import re

import sympy
from pydantic import BaseModel, ConfigDict

from distil.data import Task

from .math_expr import ParseError, parse_answer
from .protocol import Grade, Split, TestOutcome

NO_ANSWER = "no final answer found"


class MathVerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rel_tol: float = 1e-6


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start, depth = starts[-1], 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


_ANSWER_PATTERNS = [
    re.compile(r"####\s*(.+)"),
    re.compile(r"(?i)final answer(?: is)?\s*[:：]?\s*(.+)"),
    re.compile(r"(?i)\banswer(?: is)?\s*[:：]\s*(.+)"),
    re.compile(r"(?i)\bthe answer is\s+(.+)"),
]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def extract_answer(response: str) -> str | None:
    boxed = _boxed(response)
    if boxed is not None:
        return boxed
    for pattern in _ANSWER_PATTERNS:
        matches = pattern.findall(response)
        if matches:
            answer = matches[-1].strip()
            answer = re.split(r"(?<=[^\d])\.\s|\n", answer)[0]
            return answer.strip().rstrip(".")
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else None


def normalise(answer: str) -> str:
    s = answer.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", s)
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = re.sub(r"^(?:x|y|n|k|a)\s*=\s*", "", s)  # "x = 3"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")  # thousands separators
    s = s.rstrip(".").strip()
    return re.sub(r"\s+", "", s)


def _split_top(s: str) -> list[str]:
    s = s.strip()
    if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}":
        s = s[1:-1]
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p]


def _equal_one(a: str, b: str, rel_tol: float) -> bool:
    if a == b:
        return True
    try:
        x, y = parse_answer(a), parse_answer(b)
    except (ParseError, ValueError, TypeError, ZeroDivisionError, RecursionError):
        return False
    try:
        if x.is_number and y.is_number:
            xv, yv = complex(sympy.N(x)), complex(sympy.N(y))
            return abs(xv - yv) <= rel_tol * max(1.0, abs(yv))
        return sympy.simplify(x - y) == 0
    except (TypeError, ValueError, ZeroDivisionError, RecursionError, AttributeError):
        return False


def answers_equal(got: str, want: str, rel_tol: float = 1e-6) -> bool:
    a, b = normalise(got), normalise(want)
    if a == b:
        return True
    pa, pb = _split_top(a), _split_top(b)
    if len(pa) > 1 or len(pb) > 1:
        return len(pa) == len(pb) and all(_equal_one(x, y, rel_tol) for x, y in zip(pa, pb, strict=True))
    return _equal_one(a, b, rel_tol)


def answer_key(answer: str) -> str:
    """What maj@k votes on: the normalised answer; a number by its value (10 significant
    digits), so "0.5", "1/2" and "\\frac{1}{2}" vote together."""
    key = normalise(answer)
    try:
        x = parse_answer(key)
        if x.is_number:
            v = complex(sympy.N(x, 15))
            if cmath.isfinite(v):
                return f"={v.real:.10g}" if v.imag == 0 else f"={v.real:.10g}{v.imag:+.10g}j"
    except (ValueError, TypeError, ArithmeticError, RecursionError, AttributeError):
        pass  # not a number sympy can evaluate: the normalised text
    return key


class MathVerifier:
    def __init__(self, config: MathVerifierConfig | None = None) -> None:
        self.config = config or MathVerifierConfig()

    def grade(self, task: Task, response: str, *, split: Split = "public", truncated: bool = False) -> Grade:
        assert task.answer is not None
        answer = extract_answer(response)
        if answer is None:
            problem = "cut off" if truncated else NO_ANSWER
            text = (
                "Your answer was cut off before the final answer."
                if truncated
                else "No final answer was found. End with the final answer in \\boxed{}."
            )
            return Grade(reward=0.0, success=False, format_error=problem, feedback=text)
        ok = answers_equal(answer, task.answer, self.config.rel_tol)
        outcome = TestOutcome(
            index=0, status="AC" if ok else "WA", output=answer, expected="" if ok else task.answer
        )
        return Grade(
            reward=1.0 if ok else 0.0,
            success=ok,
            fraction_passed=1.0 if ok else 0.0,
            tests=[outcome],
            feedback=None if ok else f"Your final answer {answer} is incorrect.",
            extracted=answer,
            # Every correct answer equals the reference, so all of them vote together.
            answer_key=answer_key(task.answer if ok else answer),
        )
