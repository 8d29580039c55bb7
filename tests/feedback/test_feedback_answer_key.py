"""Each verifier's answer key, what maj@k votes on (#22 item 7): responses that give the same
answer in different words share a key; for code, programs that behave the same on the tests
share one; a response without an answer has none."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from distil.data import Task
from distil.gateway.feedback_worker import grade_samples
from services.feedback.config import FeedbackConfig
from services.feedback.grading import Grader
from services.feedback.verifiers import (
    CodeVerifier,
    CodeVerifierConfig,
    CustomVerifier,
    MathVerifier,
    MultipleChoiceVerifier,
)
from services.feedback.verifiers.math_answer import answer_key

from .conftest import serve_http

DOUBLE = Task(
    id="double",
    prompt="Read n, print 2n.",
    public_tests=[{"kind": "stdio", "input": "3\n", "output": "6\n"}],
    private_tests=[
        {"kind": "stdio", "input": "1\n", "output": "2\n"},
        {"kind": "stdio", "input": "5\n", "output": "10\n"},
        {"kind": "stdio", "input": "-2\n", "output": "-4\n"},
    ],
)


def fenced(code: str) -> str:
    return f"Here is my program.\n```python\n{code}\n```\n"


RIGHT_A = fenced("print(2 * int(input()))")
RIGHT_B = fenced("n = int(input())\nprint(n + n)")
WRONG_SQ_A = fenced("n = int(input())\nprint(n * n)")  # n * n = 2n only at 0 and 2: no test
WRONG_SQ_B = fenced("x = int(input().strip())\nprint(x ** 2)")
WRONG_ID = fenced("print(input())")
CRASH_A = fenced("raise ValueError('no')")
CRASH_B = fenced("print(1 / 0)")


@pytest.fixture(scope="module")
def code(sandbox) -> CodeVerifier:
    return CodeVerifier(sandbox, CodeVerifierConfig(timeout_s=2, memory_mb=512))


def test_code_key_is_the_behaviour_on_the_tests(code):
    key = {name: code.grade(DOUBLE, text, split="private") for name, text in {
        "right_a": RIGHT_A, "right_b": RIGHT_B, "sq_a": WRONG_SQ_A, "sq_b": WRONG_SQ_B,
        "id": WRONG_ID, "crash_a": CRASH_A, "crash_b": CRASH_B,
    }.items()}  # fmt: skip
    assert key["right_a"].success and key["right_b"].success
    k = {name: g.answer_key for name, g in key.items()}
    assert None not in k.values()
    assert k["right_a"] == k["right_b"]  # different code, same behaviour: one vote
    assert k["sq_a"] == k["sq_b"]  # the same wrong outputs
    assert len({k["right_a"], k["sq_a"], k["id"], k["crash_a"]}) == 4
    assert k["crash_a"] == k["crash_b"]  # a crash on every test, whatever the traceback
    assert code.grade(DOUBLE, "I cannot solve this.", split="private").answer_key is None


def test_math_key_is_the_extracted_answer():
    task = Task(id="half", prompt="What is 1/2?", verifier="math", answer="1/2")
    v = MathVerifier()
    right = [v.grade(task, t) for t in ("So it is \\boxed{\\frac{1}{2}}.", "Final answer: 0.5", "#### 1/2")]
    assert all(g.success for g in right)
    assert len({g.answer_key for g in right}) == 1
    wrong = [v.grade(task, t) for t in ("I get \\boxed{3}.", "The answer is 3.", "The answer is: x = 3")]
    assert not any(g.success for g in wrong)
    assert len({g.answer_key for g in wrong}) == 1 and wrong[0].answer_key != right[0].answer_key
    assert v.grade(task, "I give up").answer_key is None
    # Numbers vote by value, other answers by their normalised text.
    assert answer_key("2/4") == answer_key("0.5") == answer_key("50\\%")
    assert answer_key("x^2 + 1") == answer_key("x^2+1") != answer_key("x^2+2")
    assert answer_key("10^999") != answer_key("\\infty")


def test_mcq_and_custom_keys():
    task = Task(id="q", prompt="Pick one.", verifier="mcq", answer="B", choices=["a", "b", "c"])
    v = MultipleChoiceVerifier()
    assert v.grade(task, "The answer is (B).").answer_key == v.grade(task, "\\boxed{B}").answer_key == "B"
    assert v.grade(task, "no idea").answer_key is None

    app = FastAPI()

    @app.post("/grade")
    def grade(body: dict) -> dict:
        return {"reward": 1.0 if "yes" in body["response"] else 0.0}

    with serve_http(app) as url:
        custom = CustomVerifier()
        ctask = Task(id="c", prompt="Say yes.", verifier="custom", verifier_url=f"{url}/grade")
        # The endpoint extracts no answer: the whitespace-normalised text is the key.
        assert custom.grade(ctask, "yes  \n it is").answer_key == custom.grade(ctask, "yes it is").answer_key
        assert custom.grade(ctask, "yes").answer_key != custom.grade(ctask, "yes it is").answer_key
        custom.close()


def test_evaluation_grades_carry_the_key(sandbox):
    grader = Grader(FeedbackConfig(sources=[]), sandbox=sandbox)
    try:
        grades = grade_samples(
            grader, DOUBLE.model_dump(mode="json"), [RIGHT_A, RIGHT_B, WRONG_ID], [False] * 3
        )
    finally:
        grader.pool.shutdown(wait=True)
    assert [g["success"] for g in grades] == [True, True, False]
    assert grades[0]["answer_key"] == grades[1]["answer_key"] != grades[2]["answer_key"]
