"""Teacher kinds on real engines: a self-teacher (in-process vLLM engine), an external teacher
against a real ``vllm serve`` OpenAI server, black-box forms, and a teacher that is down."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from distil.bus import Feedback, Group, Response
from distil.engine import EngineConfig, Probe, SamplingConfig
from services.teacher.black_box import BlackBoxTeacher
from services.teacher.config import (
    BlackBoxTeacherConfig,
    ExternalTeacherConfig,
    RetryConfig,
    SelfEMATeacherConfig,
    SelfFrozenTeacherConfig,
)
from services.teacher.context import teacher_context
from services.teacher.external import ExternalTeacher, TokenizerMismatch
from services.teacher.self_teacher import SelfTeacher
from services.teacher.stage import TeacherStage, score_items
from tests.engine.engine_helpers import hf_logprobs, hf_model, token_logprobs
from tests.teacher.vllm_server import VLLMServer, free_port

pytestmark = pytest.mark.slow
K = 5


@pytest.fixture(scope="module")
def runner(vllm_tiny_dir):
    from distil.engine.runner import EngineRunner

    r = EngineRunner(
        EngineConfig(
            model=str(vllm_tiny_dir), enforce_eager=True, kv_cache_gib=0.5, max_model_len=512, max_logprobs=20
        )
    )
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(vllm_tiny_dir):
    s = VLLMServer(vllm_tiny_dir)
    yield s
    s.close()


@pytest.fixture(scope="module")
def hf(vllm_tiny_dir):
    return hf_model(vllm_tiny_dir)


@pytest.fixture(scope="module")
def group(runner):
    """A feedback group: response 0 has a sibling solution, 1 feedback text, 2 neither."""
    samples = runner.generate(
        [{"role": "user", "content": "What is 2+3?"}], SamplingConfig(n=3, max_tokens=12, seed=4)
    )
    feedbacks = [
        Feedback(solution_text="2+3 = 5"),
        Feedback(feedback_text="Your answer is wrong: expected 5."),
        Feedback(),
    ]
    return Group(
        job_id="j",
        group_id="g1",
        prompt_text="What is 2+3?",
        responses=[
            Response(token_ids=s.token_ids, logprobs=s.logprobs, text=s.text, feedback=f)
            for s, f in zip(samples, feedbacks, strict=True)
        ],
    )


def run(coro):
    return asyncio.run(coro)


def fresh(group: Group) -> Group:
    return Group(
        job_id=group.job_id,
        group_id=group.group_id,
        prompt_text=group.prompt_text,
        responses=[
            Response(token_ids=r.token_ids, logprobs=r.logprobs, text=r.text, feedback=r.feedback)
            for r in group.responses
        ],
    )


def check_against_hf(hf, tokenizer, group: Group, cfg) -> None:
    items = score_items(group)
    for item, response in zip(items, group.responses, strict=True):
        ctx = teacher_context(tokenizer, item, cfg)
        if ctx is None:
            assert response.teacher is None  # no signal: skipped, not scored
            continue
        t = response.teacher
        assert t.top_ids.shape == (len(item.response_ids), K) == t.top_logprobs.shape
        ref = hf_logprobs(hf, ctx.input_ids)[ctx.response_start - 1 :]
        ref_lp, _ = torch.topk(ref, K, dim=-1)
        assert np.abs(t.top_logprobs - ref_lp.numpy()).max() < 0.1
        at_ids = ref.gather(1, torch.from_numpy(t.top_ids).long()).numpy()
        assert np.abs(at_ids - t.top_logprobs).mean() < 0.01


def test_self_teacher_scores_contexts_and_skips_no_signal(runner, hf, group):
    cfg = SelfFrozenTeacherConfig(top_k=K)
    teacher = SelfTeacher(cfg, runner=runner)
    stage = TeacherStage(teacher)
    out = run(stage.handle(fresh(group)))
    assert [r.teacher is not None for r in out.responses] == [True, True, False]
    check_against_hf(hf, runner.tokenizer, out, cfg)
    assert stage.metrics()["teacher_scored"] == 2 and stage.metrics()["teacher_skipped_no_signal"] == 1
    # The feedback context differs from the solution context: different teacher distributions.
    a, b = out.responses[0].teacher, out.responses[1].teacher
    assert a.top_logprobs.shape != b.top_logprobs.shape or not np.allclose(a.top_logprobs, b.top_logprobs)


def test_self_frozen_refuses_updates_self_ema_takes_them(runner, hf, vllm_tiny_alt_dir):
    frozen = SelfTeacher(SelfFrozenTeacherConfig(), runner=runner)
    with pytest.raises(ValueError, match="keeps the initial weights"):
        run(frozen.update_weights(hf.named_parameters(), 1))
    alt = hf_model(vllm_tiny_alt_dir)
    ids = runner.engine.prompt_ids([{"role": "user", "content": "hello there"}])
    ema = SelfTeacher(SelfEMATeacherConfig(), runner=runner)
    v = runner.version + 1
    res = run(
        ema.update_weights(alt.named_parameters(), v, Probe(tuple(ids), tuple(token_logprobs(alt, ids))))
    )
    assert res.applied and res.probe_error < 0.01
    run(ema.update_weights(hf.named_parameters(), v + 1, Probe(tuple(ids), tuple(token_logprobs(hf, ids)))))


def test_external_teacher_against_vllm_serve(server, runner, hf, group):
    cfg = ExternalTeacherConfig(url=server.url, top_k=K)
    teacher = ExternalTeacher(cfg, runner.tokenizer)

    async def go():  # one event loop for the teacher's HTTP client
        assert await teacher.check_tokenizer() == "teacher"
        return await TeacherStage(teacher).handle(fresh(group))

    out = run(go())
    assert [r.teacher is not None for r in out.responses] == [True, True, False]
    check_against_hf(hf, runner.tokenizer, out, cfg)
    # Same model served in-process: the same top-K.
    local = run(
        TeacherStage(SelfTeacher(SelfFrozenTeacherConfig(top_k=K), runner=runner)).handle(fresh(group))
    )
    for r_ext, r_loc in zip(out.responses[:2], local.responses[:2], strict=True):
        assert np.abs(r_ext.teacher.top_logprobs - r_loc.teacher.top_logprobs).max() < 1e-3
        assert (r_ext.teacher.top_ids == r_loc.teacher.top_ids).mean() > 0.95


def test_external_teacher_with_other_tokenizer_refused(server, runner, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ["def add(a, b): return a + b", "hello world"] * 50,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]),
    )
    other = PreTrainedTokenizerFast(tokenizer_object=tok)
    other.chat_template = runner.tokenizer.chat_template
    teacher = ExternalTeacher(ExternalTeacherConfig(url=server.url, top_k=K), other)
    with pytest.raises(TokenizerMismatch, match="tokenizes differently from the student"):
        run(teacher.check_tokenizer())


def test_external_teacher_down_retries_then_proceeds_without_signal(runner, group):
    retry = RetryConfig(attempts=3, backoff_initial_s=0.2, backoff_max_s=1.0, timeout_s=2)
    teacher = ExternalTeacher(
        ExternalTeacherConfig(url=f"http://127.0.0.1:{free_port()}", retry=retry), runner.tokenizer
    )
    stage = TeacherStage(teacher)
    t0 = time.monotonic()
    out = run(stage.handle(fresh(group)))
    elapsed = time.monotonic() - t0
    assert all(r.teacher is None for r in out.responses)
    assert elapsed >= 0.2 * 0.5 + 0.4 * 0.5  # two backoff sleeps happened (3 attempts)
    m = stage.metrics()
    assert m["teacher_unavailable"] == 2 and m["teacher_groups_without_signal"] == 1
    assert out.metadata["teacher_unavailable"] == "2"


def test_black_box_sampled_tokens(server, runner, group):
    cfg = BlackBoxTeacherConfig(url=server.url, form="sampled_tokens", samples_per_position=3)
    teacher = BlackBoxTeacher(cfg, runner.tokenizer)
    out = run(teacher.score(score_items(fresh(group))))
    assert out[2] is None
    for r, t in zip(group.responses[:2], out[:2], strict=True):
        assert t.top_ids.shape == (len(r.token_ids), 3)
        assert np.allclose(np.exp(t.top_logprobs).sum(axis=1), 1.0, atol=1e-5)
        assert t.top_ids.min() >= 0 and t.top_ids.max() < len(runner.tokenizer)


def test_black_box_corrected_response_scored_by_self_teacher(server, runner, hf, group):
    scorer = SelfTeacher(SelfFrozenTeacherConfig(top_k=K), runner=runner)
    cfg = BlackBoxTeacherConfig(
        url=server.url,
        form="corrected_response",
        top_k=K,
        correction_temperature=1.0,
        correction_max_tokens=24,
    )
    teacher = BlackBoxTeacher(cfg, runner.tokenizer, scorer=scorer)
    items = score_items(fresh(group))

    async def go():
        return await teacher.correct(items[2]), await teacher.score(items)

    corrected, out = run(go())
    assert corrected  # the text-only teacher answered
    assert all(t is not None for t in out)  # the correction is the signal, even without feedback
    assert out[2].top_ids.shape == (len(items[2].response_ids), K)
