"""All 164 HumanEval canonical solutions grade AC; a corrupted copy of each does not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from distil.data import load_humaneval
from services.feedback.verifiers import CodeVerifier, CodeVerifierConfig

CORRUPT = """

_original = {name}


def _corrupt(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, list | tuple):
        return type(value)([*value, None])
    if value is None:
        return 0
    return None


def {name}(*args, **kwargs):
    return _corrupt(_original(*args, **kwargs))
"""


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_humaneval_canonical_ac_and_corrupted_not(sandbox):
    tasks = load_humaneval()
    assert len(tasks) == 164
    verifier = CodeVerifier(sandbox, CodeVerifierConfig(timeout_s=10))

    def grade(task):
        name = task.metadata["entry_point"]
        good = verifier.grade(task, fenced(task.reference_solution))
        bad = verifier.grade(task, fenced(task.reference_solution + CORRUPT.format(name=name)))
        return task.id, good, bad

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(grade, tasks))
    not_ac = [(tid, good.tests) for tid, good, _ in results if not good.success]
    assert not not_ac, not_ac
    passed_corrupt = [tid for tid, _, bad in results if bad.success or bad.tests[0].status == "AC"]
    assert not passed_corrupt, passed_corrupt


def test_humaneval_loader():
    tasks = load_humaneval()
    first = tasks[0]
    assert first.id == "HumanEval/0" and first.verifier == "code"
    assert first.public_tests[0].kind == "check" and first.public_tests[0].entry_point == "has_close_elements"
    assert first.reference_solution.startswith(first.prompt)
