"""The black-box ``sampled_tokens`` teacher exchanges token ids with the server: it refuses a
server that tokenizes differently or does not return sampled tokens as ids, and takes the
ids the server sampled as they are (a partial UTF-8 token, an end token), never text
re-encoded. Against a real local HTTP server speaking vLLM's protocol (openai_standin)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from transformers import AutoTokenizer

from services.teacher.base import ScoreItem
from services.teacher.black_box import BlackBoxTeacher
from services.teacher.config import BlackBoxTeacherConfig, RetryConfig
from services.teacher.context import teacher_context
from services.teacher.external import TokenizerMismatch
from tests.teacher.openai_standin import OpenAIStandIn

RETRY = RetryConfig(attempts=1, timeout_s=10)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def item(tokenizer):
    response = tokenizer.encode("It is 5.", add_special_tokens=False) + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    return ScoreItem(
        messages=[{"role": "user", "content": "What is 2+3?"}],
        prompt="What is 2+3?",
        response_ids=response,
        response_text="It is 5.",
        solution="2+3 = 5",
    )


def config(url: str, s: int = 1) -> BlackBoxTeacherConfig:
    return BlackBoxTeacherConfig(url=url, form="sampled_tokens", samples_per_position=s, retry=RETRY)


def other_tokenizer(chat_template: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ["def add(a, b): return a + b", "hello world"] * 50,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]),
    )
    other = PreTrainedTokenizerFast(tokenizer_object=tok)
    other.chat_template = chat_template
    return other


def test_partial_utf8_and_end_tokens_come_back_as_their_own_ids(tokenizer, item):
    cfg = config("http://unused", s=2)
    ctx = teacher_context(tokenizer, item, cfg)
    T = len(item.response_ids)
    # "日" is two byte-level tokens, each a partial UTF-8 sequence that decodes to U+FFFD
    # (re-encoded: another id, the replacement character's); <|endoftext|> is an end token
    # that decodes to "" and is not the tokenizer's eos (<|im_end|>).
    partial = tokenizer.encode("日", add_special_tokens=False)
    assert len(partial) == 2 and all(tokenizer.decode([t]) == "\ufffd" for t in partial)
    eot, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert eot != tokenizer.eos_token_id
    cycle = [partial[0], partial[1], eot, im_end]
    want = np.array([[cycle[(r + j) % 4] for j in range(2)] for r in range(T)], dtype=np.int32)

    def choose(prefix: list[int], j: int) -> int:
        r = len(prefix) - ctx.response_start
        return int(want[r, j]) if 0 <= r < T else partial[0]

    server = OpenAIStandIn(tokenizer, choose)
    try:
        teacher = BlackBoxTeacher(config(server.url, s=2), tokenizer)
        (out,) = asyncio.run(teacher.score([item]))
    finally:
        server.close()
    assert out is not None
    assert out.top_ids.tolist() == want.tolist()
    assert np.allclose(out.top_logprobs, -np.log(2))
    completions = [r for r in server.requests if r["path"] == "/v1/completions"]
    assert all(r["return_tokens_as_token_ids"] and r["max_tokens"] == 1 for r in completions)


def test_tokenizer_mismatch_is_refused(tokenizer, item):
    server = OpenAIStandIn(tokenizer, lambda prefix, j: 0)
    try:
        student = other_tokenizer(tokenizer.chat_template)
        teacher = BlackBoxTeacher(config(server.url), student)
        with pytest.raises(TokenizerMismatch, match="tokenizes differently from the student"):
            asyncio.run(teacher.check_tokenizer())
        teacher = BlackBoxTeacher(config(server.url), student)
        with pytest.raises(TokenizerMismatch, match="corrected_response"):  # scoring refuses too
            asyncio.run(teacher.score([item]))
    finally:
        server.close()
    assert not [r for r in server.requests if r["path"] == "/v1/completions"]  # no ids were sent


def test_server_that_returns_text_not_ids_is_refused(tokenizer, item):
    server = OpenAIStandIn(tokenizer, lambda prefix, j: 0, token_ids=False)
    try:
        teacher = BlackBoxTeacher(config(server.url), tokenizer)
        with pytest.raises(TokenizerMismatch, match="return_tokens_as_token_ids"):
            asyncio.run(teacher.check_tokenizer())
    finally:
        server.close()


def test_corrected_response_is_not_tokenizer_checked(tokenizer):
    """Text in, text out: a rewrite teacher may have any tokenizer (or none)."""
    server = OpenAIStandIn(tokenizer, lambda prefix, j: 0)
    try:
        cfg = BlackBoxTeacherConfig(url=server.url, form="corrected_response", retry=RETRY)
        teacher = BlackBoxTeacher(cfg, other_tokenizer(tokenizer.chat_template), scorer=object())
        assert asyncio.run(teacher.check_tokenizer()) == "teacher"
    finally:
        server.close()
    assert [r["path"] for r in server.requests] == []  # only GET /v1/models
