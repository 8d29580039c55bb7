from __future__ import annotations

import pytest

from distil.templates import (
    TemplateConfig,
    build_teacher_context,
    sibling_solution,
    strip_think,
    teacher_prompt,
)
from tests.core.chat_tokenizer import chat_tokenizer


def test_sibling_solution_never_returns_the_sample_itself():
    texts = ["a", "<think>hmm</think>b", "c", "d"]
    success = [True, True, False, False]
    assert sibling_solution(texts, success, 0) == "b"  # a success gets the *other* success
    assert sibling_solution(texts, success, 1) == "a"
    assert sibling_solution(texts, success, 2) == "a"  # first successful one
    assert sibling_solution(texts, success, 1, strip_thinking=False) == "a"
    assert sibling_solution(texts, success, 0, strip_thinking=False) == "<think>hmm</think>b"
    assert sibling_solution(["x", "y"], [True, False], 0) is None
    with pytest.raises(ValueError, match="one per response"):
        sibling_solution(["x"], [True, False], 0)
    with pytest.raises(ValueError, match="outside the group"):
        sibling_solution(["x"], [True], 3)


def test_strip_think():
    assert strip_think("<think>a\nb</think>\n\nanswer") == "answer"
    assert strip_think("answer<think>unterminated") == "answer"
    assert strip_think("no thinking") == "no thinking"


def test_teacher_prompt_forms():
    p = "Add two numbers."
    both = teacher_prompt(p, solution="S", feedback="F")
    assert both == "Add two numbers.\nCorrect solution:\n\nS\n\nCorrectly solve the original question."
    fb = teacher_prompt(p, feedback="F")
    assert fb == (
        "Add two numbers.\nThe following is feedback from your unsuccessful earlier attempt:\n\nF"
        "\n\nCorrectly solve the original question."
    )
    keep = teacher_prompt(
        p, solution="S", feedback="F", config=TemplateConfig(feedback_only_without_solution=False)
    )
    assert "Correct solution:\n\nS" in keep and "earlier attempt:\n\nF" in keep
    assert teacher_prompt(p) is None and teacher_prompt(p, solution="", feedback="") is None
    opsd = teacher_prompt(p, solution="S", config=TemplateConfig(style="opsd"))
    assert opsd.startswith("Add two numbers.\n\nHere is a reference solution to this problem:\nS")
    assert teacher_prompt(p, feedback="F", config=TemplateConfig(style="opsd")) is None


def test_teacher_context_appends_response_ids_unchanged_and_truncates_left():
    tok = chat_tokenizer()
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Write add."}]
    response = [7, 8, 9, 300, 301]  # ids as sampled: never re-tokenised
    content = teacher_prompt("Write add.", feedback="NameError: name 'b' is not defined")
    ctx = build_teacher_context(tok, messages, content, response, max_length=4096)
    assert ctx.input_ids[ctx.response_start :] == response
    text = tok.decode(ctx.input_ids[: ctx.response_start])
    assert text.endswith("<|im_start|>assistant\n")
    assert "NameError" in text and "You are helpful." in text
    assert ctx.truncated_tokens == 0

    gen = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    full_prompt = ctx.response_start
    short = build_teacher_context(
        tok, messages, content, response, max_length=full_prompt + len(response) - 10
    )
    assert short.truncated_tokens == 10
    assert len(short.input_ids) == full_prompt + len(response) - 10
    assert short.input_ids[short.response_start :] == response
    assert short.input_ids[short.response_start - len(gen) : short.response_start] == gen  # never cut
    assert short.input_ids[: short.response_start - len(gen)] == ctx.input_ids[10 : full_prompt - len(gen)]

    with pytest.raises(ValueError, match="cannot fit"):
        build_teacher_context(tok, messages, content, response, max_length=len(gen) + len(response) - 1)
    with pytest.raises(ValueError, match="no user turn"):
        build_teacher_context(tok, [{"role": "system", "content": "x"}], content, response, max_length=100)
