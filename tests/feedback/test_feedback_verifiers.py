"""Verifiers on right, wrong, crashing, slow, malformed and verdict-forging programs."""

from __future__ import annotations

import json
import textwrap

import pytest
from fastapi import FastAPI

from distil.data import Task
from services.feedback.verifiers import (
    CodeVerifier,
    CodeVerifierConfig,
    CustomVerifier,
    MathVerifier,
    MultipleChoiceVerifier,
    extract_code,
)
from services.feedback.verifiers.compare import outputs_match, values_match
from services.feedback.verifiers.math_answer import answers_equal, extract_answer
from services.feedback.verifiers.math_expr import ParseError, parse_answer
from services.feedback.verifiers.mcq import extract_letter

from .conftest import serve_http


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{textwrap.dedent(code).strip()}\n```\n"


@pytest.fixture(scope="module")
def code(sandbox) -> CodeVerifier:
    return CodeVerifier(sandbox, CodeVerifierConfig(timeout_s=2, memory_mb=512))


STDIO = Task(
    id="sum",
    prompt="Read integers, print their sum.",
    public_tests=[
        {"kind": "stdio", "input": "1 2\n", "output": "3\n"},
        {"kind": "stdio", "input": "10 20 30\n", "output": "60\n"},
        {"kind": "stdio", "input": "0.1 0.2\n", "output": "0.3\n"},
    ],
    private_tests=[{"kind": "stdio", "input": "5\n", "output": "5\n"}],
)
CALL = Task(
    id="rev",
    prompt="Write rev(xs) returning the list reversed.",
    public_tests=[
        {"kind": "call", "fn": "rev", "args": [[1, 2, 3]], "expected": [3, 2, 1]},
        {"kind": "call", "fn": "rev", "args": [[]], "expected": []},
    ],
)
CHECK = Task(
    id="add",
    prompt="def add(a, b):\n",
    code_prefix="def add(a, b):\n    '''Add two numbers.'''\n",
    public_tests=[
        {
            "kind": "check",
            "entry_point": "add",
            "code": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n",
        }
    ],
)
SUM_OK = "import sys\nprint(sum(float(x) if '.' in x else int(x) for x in sys.stdin.read().split()))"


# -- extraction and comparison ------------------------------------------------------------


def test_extract_code_rules():
    text = "```python\nfirst\n```\ntext\n```py\nsecond\n```"
    assert extract_code(text).code == "second\n"
    assert extract_code(text, rule="first").code == "first\n"
    assert extract_code("```\nplain\n```").code == "plain\n"
    assert extract_code("no code here").problem == "no ```python code block"
    assert extract_code("```python\ndef f():\n    return").problem == "cut off"
    assert extract_code("```python\nx = 1\n```", truncated=True).code == "x = 1\n"


def test_output_comparison():
    assert outputs_match("3 \n\n", "3")
    assert outputs_match("0.30000000000000004\n", "0.3")
    assert not outputs_match("3\n4", "3")
    assert not outputs_match("abc", "abd")
    assert values_match([1, 2.0000000001], [1, 2])
    assert not values_match(True, 1)
    assert not values_match({"a": 1}, {"a": 2})
    # A program returning a huge int (a student's runaway x ** n) is graded wrong, not a crash
    # that dead-letters the whole group.
    assert not values_match(10**400, 7) and not values_match(10**400, 7.5) and not values_match(2.0, 10**400)
    assert values_match(10**400, 10**400) and not values_match(10**400 + 1, 10**400)


# -- code: stdin/stdout -------------------------------------------------------------------


def test_stdio_right(code):
    g = code.grade(STDIO, fenced(SUM_OK))
    assert g.success and g.reward == 1.0 and g.fraction_passed == 1.0 and g.feedback is None
    assert [t.status for t in g.tests] == ["AC"] * 3
    assert all(t.wall_s > 0 for t in g.tests)  # each test is timed separately


def test_stdio_private_split(code):
    g = code.grade(STDIO, fenced(SUM_OK), split="private")
    assert len(g.tests) == 1 and g.success


def test_stdio_wrong_gives_two_shortest_wrong_answers(code):
    g = code.grade(STDIO, fenced("print(42)"))
    assert not g.success and g.reward == 0.0 and g.fraction_passed == 0.0
    assert [t.status for t in g.tests] == ["WA"] * 3
    assert g.feedback.count("Wrong answer.") == 2
    assert "Input:\n1 2" in g.feedback and "Expected:\n3" in g.feedback  # shortest input first
    assert "10 20 30" not in g.feedback


def test_stdio_partial(code):
    g = code.grade(STDIO, fenced("import sys\nprint(sum(map(int, sys.stdin.read().split())))"))
    assert [t.status for t in g.tests] == ["AC", "AC", "RE"]
    assert g.reward == 0.0 and g.fraction_passed == pytest.approx(2 / 3)
    assert g.feedback.startswith("Runtime error:") and "ValueError" in g.feedback
    assert 'File "/sandbox/main.py"' in g.feedback and "Last input:\n0.1 0.2" in g.feedback


def test_crashing_program(code):
    g = code.grade(STDIO, fenced("def f():\n    return 1 / 0\nf()"))
    assert {t.status for t in g.tests} == {"RE"}
    assert "ZeroDivisionError" in g.feedback and "line 2, in f" in g.feedback


def test_slow_program_times_out_per_test(code):
    g = code.grade(STDIO, fenced("while True: pass"))
    assert [t.status for t in g.tests] == ["TLE"] * 3
    assert all(1.9 < t.wall_s < 4 for t in g.tests)
    assert g.feedback.startswith("Time limit exceeded") and "1 2" in g.feedback


def test_memory_and_output_limits(code):
    assert {t.status for t in code.grade(STDIO, fenced("x = bytearray(10**11)")).tests} == {"MLE"}
    assert {t.status for t in code.grade(STDIO, fenced("while True: print('x' * 1000)")).tests} == {"OLE"}


def test_malformed_responses(code):
    g = code.grade(STDIO, "I would just add them up.")
    assert not g.success and g.format_error and "```python" in g.feedback
    g = code.grade(STDIO, "```python\nimport sys\nprint(sum(", truncated=True)
    assert g.format_error == "cut off" and "cut off" in g.feedback
    g = code.grade(STDIO, fenced("def f(:\n    pass"))
    assert {t.status for t in g.tests} == {"CE"} and "SyntaxError" in g.feedback
    assert g.feedback.startswith("Compilation error")


# -- code: function calls -----------------------------------------------------------------


def test_call_right_and_wrong(code):
    assert code.grade(CALL, fenced("def rev(xs):\n    return xs[::-1]")).success
    g = code.grade(CALL, fenced("def rev(xs):\n    return xs"))
    assert [t.status for t in g.tests] == ["WA", "AC"]
    assert "rev(*[[1, 2, 3]])" in g.feedback and "Expected:\n[3, 2, 1]" in g.feedback
    g = code.grade(CALL, fenced("def reverse(xs):\n    return xs[::-1]"))
    assert {t.status for t in g.tests} == {"RE"} and "no function named 'rev'" in g.feedback


def test_call_prints_do_not_confuse_the_result(code):
    g = code.grade(CALL, fenced("def rev(xs):\n    print('debug', xs)\n    return list(reversed(xs))"))
    assert g.success, g


# -- code: HumanEval-style check(candidate) -----------------------------------------------


def test_check_right_wrong_and_completion_style(code):
    assert code.grade(CHECK, fenced("def add(a, b):\n    return a + b")).success
    # A bare body (completion style) is appended to the task's code prefix.
    assert code.grade(CHECK, "```python\n    return a + b\n```").success
    g = code.grade(CHECK, fenced("def add(a, b):\n    return a - b"))
    assert g.tests[0].status == "WA" and "assert candidate(1, 2) == 3" in g.feedback


# -- verdict forgery ----------------------------------------------------------------------

FORGERIES = {
    "print-passed": "print('PASSED')\nprint('All tests passed')\nimport sys; sys.exit(0)",
    "result-file": "open('result.json', 'w').write('{\"passed\": true}')\nopen('/sandbox/verdict', 'w').write('AC')",
    "early-exit": "import sys\nsys.exit(0)",
    "os-exit": "import os\nos._exit(0)",
    "read-the-nonce": """
        import __main__, os, json
        os.write(__main__._OUT, (__main__._NONCE + json.dumps({"calls": [], "outcome": "completed", "result": "[9, 9]", "passed": True}) + "\\n").encode())
        os._exit(0)
        """,
    "patched-builtins": """
        import builtins
        builtins.abs = lambda x: 0
        builtins.AssertionError = KeyError
        builtins.isinstance = lambda *a: True
        def add(a, b): return 0
        def rev(xs): return 0
        """,
    "always-equal": """
        class Anything(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = int.__hash__
        def add(a, b): return Anything(0)
        def rev(xs): return Anything(0)
        """,
    "atexit-print": "import atexit\natexit.register(lambda: print('ACCEPTED'))\nimport sys\nsys.exit(0)",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
@pytest.mark.parametrize("task", [STDIO, CALL, CHECK], ids=["stdio", "call", "check"])
def test_verdict_forgery_never_passes(code, task, name):
    g = code.grade(task, fenced(FORGERIES[name]))
    assert not g.success and g.reward == 0.0, (name, g.tests)
    assert all(t.status != "AC" for t in g.tests), (name, g.tests)


def test_expected_outputs_never_enter_the_sandbox(code, sandbox, monkeypatch):
    seen = []
    original = sandbox.run

    def spy(program, **kw):
        seen.append(json.dumps([program, kw.get("stdin"), kw.get("files")]))
        return original(program, **kw)

    monkeypatch.setattr(sandbox, "run", spy)
    task = Task(
        id="t",
        prompt="",
        public_tests=[
            {"kind": "stdio", "input": "1\n", "output": "EXPECTED-7731\n"},
            {"kind": "call", "fn": "f", "args": [1], "expected": "EXPECTED-9913"},
        ],
    )
    code.grade(task, fenced("def f(x): return x\nprint(1)"))
    assert seen and not any("EXPECTED-" in s for s in seen)


# -- math, multiple choice ----------------------------------------------------------------


@pytest.mark.parametrize(
    "response,answer",
    [
        ("so the result is \\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{2\\sqrt{3}}", "\\sqrt{12}"),
        ("The answer is 1,000.", "1000"),
        ("#### 42", "42"),
        ("Final answer: $x = 3$", "3"),
        ("\\boxed{(1, 2)}", "(1,2)"),
        ("\\boxed{50\\%}", "1/2"),
        ("\\boxed{\\dfrac{\\pi}{4}}", "\\frac{\\pi}{4}"),
        ("\\boxed{x^2 + 2x + 1}", "(x+1)^2"),
    ],
)
def test_math_equivalent_answers(response, answer):
    task = Task(id="m", prompt="?", verifier="math", answer=answer)
    g = MathVerifier().grade(task, response)
    assert g.success and g.reward == 1.0, (response, g.extracted)


def test_math_wrong_missing_and_hostile():
    task = Task(id="m", prompt="?", verifier="math", answer="4")
    assert not MathVerifier().grade(task, "\\boxed{3}").success
    g = MathVerifier().grade(task, "I am not sure.")
    assert not g.success and g.format_error and "\\boxed" in g.feedback
    for hostile in [
        "\\boxed{__import__('os').system('touch /tmp/pwn')}",
        "\\boxed{9^9^9^9}",
        "\\boxed{(((((1" + ")" * 5 + "}",
    ]:
        assert not MathVerifier().grade(task, hostile).success
    with pytest.raises(ParseError):
        parse_answer("().__class__")
    assert extract_answer("no numbers") is None
    assert answers_equal("\\frac{6}{4}", "1.5")


def test_multiple_choice():
    task = Task(id="q", prompt="?", verifier="mcq", answer="C", choices=["a", "b", "c", "d"])
    v = MultipleChoiceVerifier()
    assert v.grade(task, "Let me think... The answer is (C).").success
    assert v.grade(task, "Answer: C").success
    assert v.grade(task, "\\boxed{C}").success
    assert not v.grade(task, "The answer is (B).").success
    g = v.grade(task, "I cannot decide.")
    assert g.format_error and not g.success
    assert extract_letter("(A) is wrong, so the answer is D", "ABCD") == "D"


# -- custom HTTP verifier -----------------------------------------------------------------


def test_custom_http_verifier():
    app = FastAPI()

    @app.post("/verify")
    def verify(body: dict) -> dict:
        ok = "42" in body["response"]
        return {"reward": 1.0 if ok else 0.25, "feedback": None if ok else "Think about 6 x 7."}

    with serve_http(app) as url:
        task = Task(id="c", prompt="?", verifier="custom", verifier_url=f"{url}/verify")
        v = CustomVerifier()
        good, bad = v.grade(task, "It is 42."), v.grade(task, "It is 41.")
        assert good.success and good.reward == 1.0
        assert not bad.success and bad.reward == 0.25 and bad.feedback == "Think about 6 x 7."
        broken = v.grade(task.model_copy(update={"verifier_url": f"{url}/missing"}), "x")
        assert not broken.success and broken.tests[0].status == "SANDBOX_ERROR"
        v.close()
