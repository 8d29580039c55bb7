"""The packaged SmolLM2-135M-Instruct on a real vLLM CPU engine: where output quality shows
that the chat template, sampling and weight loading are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distil.engine import EngineConfig, Probe, SamplingConfig
from tests.engine.engine_helpers import hf_model, token_logprobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(smollm2_dir):
    from distil.engine import EngineRunner

    runner = EngineRunner(
        EngineConfig(
            model=str(smollm2_dir), enforce_eager=True, kv_cache_gib=0.5, max_model_len=512, max_logprobs=20
        )
    )
    yield runner
    runner.close()


def test_greedy_chat_answer_is_code(engine):
    msgs = [{"role": "user", "content": "Write a Python function add(a, b) that returns the sum of a and b."}]
    (s,) = engine.generate(msgs, SamplingConfig(temperature=0, max_tokens=96))
    assert "def add(a, b)" in s.text and "return a + b" in s.text.replace("(", "").replace(")", "")


def test_full_model_update_round_trip_verified(engine, smollm2_dir):
    hf = hf_model(smollm2_dir)
    ids = engine.engine.prompt_ids([{"role": "user", "content": "What is the capital of France?"}])
    ids = ids + engine.tokenizer.encode("The capital of France is Paris.", add_special_tokens=False)
    base = engine.score_tokens(ids)
    assert np.abs(base - np.asarray(token_logprobs(hf, ids))).mean() < 0.1  # bf16 engine vs fp32
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(1 + 0.05 * torch.randn_like(p))
    probe = Probe(tuple(ids), tuple(token_logprobs(hf, ids)))
    res = engine.update_weights(hf.state_dict(), engine.version + 1, probe)
    assert res.applied and res.probe_error < 0.1
    assert np.abs(engine.score_tokens(ids) - base).mean() > 0.2
