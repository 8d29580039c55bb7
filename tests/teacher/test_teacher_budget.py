"""The teacher context budget is what the scoring engine can take: the configured
``max_length`` capped by the engine's context window; a longer context loses the start of
its prompt part, never a response position."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from services.teacher.base import ScoreItem
from services.teacher.config import SelfFrozenTeacherConfig
from services.teacher.context import context_budget, teacher_context


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_budget_is_the_smaller_of_max_length_and_the_engine_window():
    # vLLM refuses a prompt of max_model_len tokens: one position is left for the token
    # a scoring request generates.
    assert context_budget(4096, 2048) == 2047
    assert context_budget(1024, 2048) == 1024
    assert context_budget(2047, 2048) == 2047
    assert context_budget(4096, None) == 4096  # a scorer with no known window


def test_context_over_the_engine_window_is_cut_in_the_prompt_part(tokenizer):
    prompt = "Count the words in this text: " + " ".join(f"word{i}" for i in range(400))
    response = tokenizer.encode("There are 400 words.", add_special_tokens=False) + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    item = ScoreItem(
        messages=[{"role": "user", "content": prompt}],
        prompt=prompt,
        response_ids=response,
        solution="There are 400 words.",
    )
    cfg = SelfFrozenTeacherConfig()  # max_length 4096
    whole = teacher_context(tokenizer, item, cfg)
    assert len(whole.input_ids) > 256 and whole.truncated_tokens == 0
    ctx = teacher_context(tokenizer, item, cfg, max_length=context_budget(cfg.max_length, 256))
    assert len(ctx.input_ids) == 255
    assert ctx.input_ids[ctx.response_start :] == response  # every response position kept
    # The start of the prompt part went, the end of it (generation prompt included) stayed.
    assert ctx.truncated_tokens == len(whole.input_ids) - 255
    assert ctx.input_ids == whole.input_ids[ctx.truncated_tokens :]
    assert ctx.response_start == whole.response_start - ctx.truncated_tokens
