"""Multiple-choice verifier: extract the chosen letter and compare."""

from __future__ import annotations

import re

from distil.data import Task

from .protocol import Grade, Split, TestOutcome


def _letters(task: Task) -> str:
    count = len(task.choices) if task.choices else 10
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:count]


def extract_letter(response: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The chosen option: \\boxed{B}, "answer is (B)", "Answer: B", else the last
    standalone "(B)" / "B)" / "B." / "B" on its own line."""
    L = f"[{letters}]"
    patterns = [
        rf"\\boxed\{{\s*\(?({L})\)?\s*\}}",
        rf"(?i:answer)\s*(?i:is)?\s*[:：]?\s*\(?\**({L})\**\)?(?![A-Za-z])",
        rf"(?i:option|choice)\s*\(?({L})\)?(?![A-Za-z])",
        rf"\(({L})\)",
        rf"(?m)^\s*({L})[.)]?\s*$",
        rf"(?<![A-Za-z])({L})[.)](?=\s|$)",
    ]
    for pattern in patterns:
        found = re.findall(pattern, response)
        if found:
            return found[-1].upper()
    return None


class MultipleChoiceVerifier:
    def grade(self, task: Task, response: str, *, split: Split = "public", truncated: bool = False) -> Grade:
        assert task.answer is not None
        want = task.answer.strip().strip("()").upper()
        got = extract_letter(response, _letters(task))
        if got is None:
            return Grade(
                reward=0.0,
                success=False,
                format_error="no option letter found",
                feedback="No option letter was found. End with 'The answer is (X)'.",
            )
        ok = got == want
        return Grade(
            reward=1.0 if ok else 0.0,
            success=ok,
            fraction_passed=1.0 if ok else 0.0,
            tests=[
                TestOutcome(index=0, status="AC" if ok else "WA", output=got, expected="" if ok else want)
            ],
            feedback=None if ok else f"You chose ({got}), which is incorrect.",
            extracted=got,
            answer_key=got,
        )
