"""Compare a program's stdout with the expected output: line by line after stripping,
then token by token with a numeric tolerance."""

from __future__ import annotations

import math

DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-6


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.strip().splitlines()]
    return lines


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tokens_match(got: str, want: str, rel_tol: float, abs_tol: float) -> bool:
    if got == want:
        return True
    a, b = _number(got), _number(want)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def outputs_match(
    got: str, want: str, *, rel_tol: float = DEFAULT_REL_TOL, abs_tol: float = DEFAULT_ABS_TOL
) -> bool:
    got_lines, want_lines = _lines(got), _lines(want)
    if got_lines == want_lines:
        return True
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        if g == w:
            continue
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt) or not all(
            _tokens_match(x, y, rel_tol, abs_tol) for x, y in zip(gt, wt, strict=True)
        ):
            return False
    return True


def values_match(
    got: object, want: object, *, rel_tol: float = DEFAULT_REL_TOL, abs_tol: float = DEFAULT_ABS_TOL
) -> bool:
    """Deep equality of JSON values with a numeric tolerance for floats (bools are not numbers)."""
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, int | float) and isinstance(want, int | float):
        if got == want:
            return True
        if isinstance(got, int) and isinstance(want, int):
            return False  # exact; and an int beyond float's range (a runaway x ** n) must not raise
        try:
            return math.isclose(float(got), float(want), rel_tol=rel_tol, abs_tol=abs_tol)
        except OverflowError:  # an int too large for a float against a float: not close
            return False
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(
            values_match(g, w, rel_tol=rel_tol, abs_tol=abs_tol) for g, w in zip(got, want, strict=True)
        )
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(
            values_match(got[k], want[k], rel_tol=rel_tol, abs_tol=abs_tol) for k in got
        )
    return got == want
