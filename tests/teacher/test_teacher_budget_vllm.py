"""A self-teacher whose contexts exceed its engine's window (the teacher's max_length 4096,
the engine's max_model_len smaller) scores them with the prompt part cut on the left,
instead of the engine refusing them (PromptTooLong, which dead-letters the whole group)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from distil.bus import Feedback, Group, Response
from services.teacher.config import SelfFrozenTeacherConfig
from services.teacher.context import teacher_context
from services.teacher.self_teacher import SelfTeacher
from services.teacher.stage import TeacherStage, score_items
from tests.engine.engine_helpers import hf_logprobs, hf_model, tiny_engine_config

pytestmark = pytest.mark.slow
K = 5
WINDOW = 256


@pytest.fixture(scope="module")
def runner(vllm_tiny_dir):
    from distil.engine.runner import EngineRunner

    r = EngineRunner(tiny_engine_config(vllm_tiny_dir, max_model_len=WINDOW, max_logprobs=K))
    yield r
    r.close()


def test_context_longer_than_the_engine_window_is_scored_left_truncated(runner, vllm_tiny_dir):
    tok = runner.tokenizer
    prompt = "Count the words in this text: " + " ".join(f"word{i}" for i in range(300))
    answers = ["There are 300 words.", "There are 299 words.", "I do not know."]
    feedbacks = [
        Feedback(solution_text="There are 300 words."),  # a successful sibling's solution
        Feedback(feedback_text="Wrong: count again."),
        Feedback(),
    ]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    responses = []
    for text, fb in zip(answers, feedbacks, strict=True):
        ids = np.asarray(tok.encode(text, add_special_tokens=False) + [end], dtype=np.int32)
        responses.append(
            Response(token_ids=ids, logprobs=np.full(len(ids), -1.0, np.float32), text=text, feedback=fb)
        )
    group = Group(job_id="j", group_id="long", prompt_text=prompt, responses=responses)

    cfg = SelfFrozenTeacherConfig(top_k=K)  # max_length 4096 > the engine's 256
    teacher = SelfTeacher(cfg, runner=runner)
    items = score_items(group)
    assert len(teacher_context(tok, items[0], cfg).input_ids) > WINDOW  # would not fit untruncated

    stage = TeacherStage(teacher)
    out = asyncio.run(stage.handle(group))  # raised PromptTooLong before
    assert [r.teacher is not None for r in out.responses] == [True, True, False]
    assert stage.metrics()["teacher_scored"] == 2

    hf = hf_model(vllm_tiny_dir)
    for item, r in zip(items[:2], out.responses[:2], strict=True):
        ctx = teacher_context(tok, item, cfg, max_length=WINDOW - 1)
        assert ctx.truncated_tokens > 0 and ctx.input_ids[ctx.response_start :] == item.response_ids
        t = r.teacher
        assert t.top_ids.shape == (len(item.response_ids), K) == t.top_logprobs.shape  # every position
        # The scores are those of the left-truncated context.
        ref = hf_logprobs(hf, ctx.input_ids)[ctx.response_start - 1 :]
        ref_lp, _ = torch.topk(ref, K, dim=-1)
        assert np.abs(t.top_logprobs - ref_lp.numpy()).max() < 0.1
