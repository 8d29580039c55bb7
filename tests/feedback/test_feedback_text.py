"""Feedback text follows the SDPO / LiveCodeBench conventions."""

from __future__ import annotations

from services.feedback.verifiers import TestOutcome
from services.feedback.verifiers.feedback_text import (
    FeedbackTextConfig,
    build_feedback,
    head_tail,
    user_traceback,
)

TRACEBACK = """Traceback (most recent call last):
  File "/sandbox/main.py", line 9, in <module>
    main()
  File "/sandbox/main.py", line 7, in main
    solve(data)
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
  File "/sandbox/main.py", line 3, in solve
    return 1 // len(data)
ZeroDivisionError: integer division or modulo by zero"""


def outcome(index, status, **kw):
    return TestOutcome(index=index, status=status, **kw)


def test_all_pass_gives_no_feedback():
    assert build_feedback([outcome(0, "AC"), outcome(1, "AC")]) is None


def test_first_runtime_error_wins_with_user_frames():
    text = build_feedback(
        [
            outcome(0, "WA", input="1", output="2", expected="3"),
            outcome(1, "TLE", input="big"),
            outcome(2, "RE", input="[]", error=TRACEBACK),
            outcome(3, "RE", input="x", error="other"),
        ]
    )
    assert text.startswith("Runtime error:")
    assert "ZeroDivisionError" in text and "line 3, in solve" in text
    assert "json/__init__.py" not in text  # library frames dropped
    assert "Last input:\n[]" in text and "Wrong answer" not in text


def test_timeout_before_wrong_answers():
    text = build_feedback(
        [outcome(0, "WA", input="1", output="2", expected="3"), outcome(1, "TLE", input="9 9")]
    )
    assert text.startswith("Time limit exceeded") and "9 9" in text


def test_format_problem_before_wrong_answers():
    assert "```python" in build_feedback([], format_error="no ```python code block")
    assert "cut off" in build_feedback([], format_error="cut off")


def test_two_shortest_wrong_answers():
    wrong = [outcome(i, "WA", input="x" * n, output="o", expected="e") for i, n in enumerate([30, 5, 20, 1])]
    text = build_feedback(wrong)
    assert text.count("Wrong answer.") == 2
    assert "Input:\nx\n" in text and "Input:\nxxxxx\n" in text and "x" * 20 not in text


def test_truncation_limits():
    cfg = FeedbackTextConfig()
    long_input = "\n".join("y" * 1000 for _ in range(50))
    text = build_feedback([outcome(0, "WA", input=long_input, output="z" * 5000, expected="e")], cfg=cfg)
    assert len(text) <= cfg.total_chars
    input_part = text.split("Input:\n")[1].split("\nYour output:")[0]
    assert len(input_part.splitlines()) <= cfg.input_lines + 1
    assert all(len(line) <= cfg.line_chars for line in input_part.splitlines())
    output_part = text.split("Your output:\n")[1].split("\nExpected:")[0]
    assert len(output_part) <= cfg.output_chars


def test_head_tail_keeps_the_end_of_tracebacks():
    text = "Traceback start\n" + "frame\n" * 1000 + "ValueError: the end"
    cut = head_tail(text, 200)
    assert len(cut) <= 200 and cut.startswith("Traceback") and cut.endswith("ValueError: the end")
    assert head_tail("short", 200) == "short"


def test_user_traceback_without_traceback():
    assert user_traceback("Killed", 3) == "Killed"


def test_sandbox_errors_are_not_the_models_fault():
    assert build_feedback([outcome(0, "SANDBOX_ERROR", error="bwrap: ...")]) is None
