"""The engine wrapper on a real vLLM CPU engine (tiny random Llama), checked against transformers."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from distil.engine import (
    Probe,
    ProbeMismatch,
    PromptTooLong,
    SamplingConfig,
    WeightVersionError,
)
from distil.engine.engine import fit_prompt
from tests.engine.engine_helpers import hf_logprobs, hf_model, tiny_engine_config, token_logprobs

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
TOL_MEAN = 0.01  # bf16 engine vs fp32 transformers, mean |Δ log-prob|
TOL_MAX = 0.1


@pytest.fixture(scope="module")
def engine(vllm_tiny_dir):
    from distil.engine import EngineRunner

    # probe_tolerance: bf16 noise on this model is ~0.001
    runner = EngineRunner(tiny_engine_config(vllm_tiny_dir, max_logprobs=20, probe_tolerance=0.02))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def base_hf(vllm_tiny_dir):
    return hf_model(vllm_tiny_dir)


@pytest.fixture(scope="module")
def alt_hf(vllm_tiny_alt_dir):
    return hf_model(vllm_tiny_alt_dir)


def restore(engine, model, version):
    engine.update_weights(model.state_dict().items(), version)


def test_chat_template_applied_with_thinking_off(engine):
    ids = engine.engine.prompt_ids(MESSAGES)
    want = engine.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, enable_thinking=False)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert ids == list(want)
    assert engine.tokenizer.decode(ids).rstrip().endswith("assistant")


def test_generate_n_samples_with_truncation_flag(engine):
    samples = engine.generate(MESSAGES, SamplingConfig(n=4, max_tokens=6, seed=3))
    assert len(samples) == 4
    for s in samples:
        assert s.token_ids.dtype == np.int32 and s.logprobs.dtype == np.float32
        assert len(s.token_ids) == len(s.logprobs) == 6  # random model: never stops early
        assert s.finish_reason == "length" and s.truncated
        assert np.all(s.logprobs <= 0)
        assert s.policy_version == engine.version
    assert len({tuple(s.token_ids) for s in samples}) > 1  # n distinct samples, not copies


def test_seed_reproduces_samples(engine):
    cfg = SamplingConfig(n=2, max_tokens=8, seed=11)
    a = engine.generate(MESSAGES, cfg)
    b = engine.generate(MESSAGES, cfg)
    assert [s.token_ids.tolist() for s in a] == [s.token_ids.tolist() for s in b]


def test_stop_string_ends_generation(engine):
    first = engine.generate(MESSAGES, SamplingConfig(max_tokens=12, seed=5))[0]
    stop = engine.tokenizer.decode(first.token_ids[3:4])
    assert stop.strip(), "need a visible stop string"
    again = engine.generate(MESSAGES, SamplingConfig(max_tokens=12, seed=5, stop=(stop,)))[0]
    assert again.finish_reason == "stop" and not again.truncated
    assert len(again.token_ids) < len(first.token_ids) and stop not in again.text


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, 0), (0.7, 50)])
def test_sampled_logprobs_match_transformers_distribution_sampled(engine, base_hf, temperature, top_k):
    prompt = engine.engine.prompt_ids(MESSAGES)
    samples = engine.generate(
        prompt, SamplingConfig(n=3, max_tokens=10, temperature=temperature, top_k=top_k, seed=7)
    )
    errs = []
    for s in samples:
        ids = prompt + s.token_ids.tolist()
        logits = base_hf(torch.tensor([ids])).logits[0, len(prompt) - 1 : -1].float().detach() / temperature
        if top_k:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(s.token_ids.tolist())[:, None])[:, 0]
        errs.append(np.abs(ref.numpy() - s.logprobs))
    err = np.concatenate(errs)
    # With top-k, a bf16 near-tie at the k-th logit can put a sampled token just outside
    # the fp32 top-k; allow a few such positions, none without top-k.
    outside = ~np.isfinite(err)
    assert outside.mean() <= (0.1 if top_k else 0.0)
    err = err[~outside]
    # Without top-k: bf16 noise only. With it, the normaliser over the top-k set also moves
    # with near-ties at its boundary on this almost-flat random model.
    assert err.mean() < (0.05 if top_k else TOL_MEAN) and err.max() < (0.2 if top_k else TOL_MAX)
    if temperature != 1.0:  # processed (sampled-distribution) log-probs, not the raw ones
        raw = hf_logprobs(base_hf, prompt + samples[0].token_ids.tolist())[len(prompt) - 1 :]
        raw_tok = raw.gather(1, torch.tensor(samples[0].token_ids.tolist())[:, None])[:, 0].numpy()
        assert np.abs(raw_tok - samples[0].logprobs).mean() > 10 * TOL_MEAN


def test_score_prompt_topk_matches_transformers_topk(engine, base_hf):
    prompt = engine.engine.prompt_ids(MESSAGES)
    response = engine.generate(prompt, SamplingConfig(max_tokens=12, seed=1))[0].token_ids.tolist()
    ids = prompt + response
    top = engine.score_prompt_topk(ids, len(prompt), 20)
    assert top.ids.shape == (len(response), 20) and top.logprobs.shape == (len(response), 20)
    ref = hf_logprobs(base_hf, ids)[len(prompt) - 1 :]
    ref_lp, ref_ids = torch.topk(ref, 20, dim=-1)
    assert np.abs(top.logprobs - ref_lp.numpy()).max() < TOL_MAX
    # The same ids, up to swaps between near-ties; the log-probs at the engine's ids agree.
    assert (top.ids[:, :5] == ref_ids[:, :5].numpy()).mean() > 0.9
    at_engine_ids = ref.gather(1, torch.from_numpy(top.ids).long()).numpy()
    assert np.abs(at_engine_ids - top.logprobs).mean() < TOL_MEAN
    assert np.all(np.diff(top.logprobs, axis=1) <= 1e-6)  # most likely first
    tok_ref = ref.gather(1, torch.tensor(response)[:, None])[:, 0].numpy()
    assert np.abs(top.token_logprobs - tok_ref).mean() < TOL_MEAN


def test_score_rejects_bad_arguments(engine):
    with pytest.raises(ValueError, match="start=0"):
        engine.score_prompt_topk([1, 2, 3], 0, 5)
    with pytest.raises(ValueError, match="max_logprobs"):
        engine.score_prompt_topk([1, 2, 3], 1, 21)
    with pytest.raises(PromptTooLong):
        engine.score_prompt_topk(list(range(5, 300)), 1, 5)


def test_overlong_prompt_refused_or_truncated(engine):
    with pytest.raises(PromptTooLong, match="context window is 256"):
        engine.generate(list(range(5, 400)), SamplingConfig(max_tokens=4))
    assert fit_prompt(list(range(10)), 6, "truncate_left") == [5, 6, 7, 8, 9]
    with pytest.raises(PromptTooLong, match="truncate_left"):
        fit_prompt(list(range(10)), 6, "error")


def test_weight_update_changes_outputs_and_probe_verifies(engine, base_hf, alt_hf):
    prompt = engine.engine.prompt_ids(MESSAGES)
    before = engine.score_tokens(prompt)
    v = engine.version + 1
    # named_parameters() lists the tied embedding once; the engine must still update the head.
    probe = Probe(tuple(prompt), tuple(token_logprobs(alt_hf, prompt)))
    result = engine.update_weights(alt_hf.named_parameters(), v, probe)
    assert result.applied and result.version == v == engine.version
    assert result.probe_error is not None and result.probe_error < TOL_MEAN
    after = engine.score_tokens(prompt)
    assert np.abs(after - before).mean() > 0.05
    assert np.abs(after - np.asarray(probe.expected_logprobs)).mean() < TOL_MEAN
    sample = engine.generate(prompt, SamplingConfig(max_tokens=4, seed=2))[0]
    assert sample.policy_version == v
    # Same version again: a no-op. An older version: refused.
    assert not engine.update_weights(alt_hf.named_parameters(), v, probe).applied
    with pytest.raises(WeightVersionError, match=f"version {v - 1} arrived after version {v}"):
        engine.update_weights(base_hf.named_parameters(), v - 1)
    restore(engine, base_hf, v + 1)
    assert np.abs(engine.score_tokens(prompt) - before).mean() < TOL_MEAN


@pytest.mark.parametrize("transport", ["file", "rpc"])
def test_chunked_update_in_many_messages(engine, base_hf, alt_hf, transport):
    from distil.engine.engine import Engine

    prompt = engine.engine.prompt_ids(MESSAGES)
    v = engine.version + 1
    eng: Engine = engine.engine
    old = eng.config
    eng.config = old.model_copy(update={"weight_chunk_mib": 0.001, "weight_transport": transport})
    try:
        probe = Probe(tuple(prompt), tuple(token_logprobs(alt_hf, prompt)))
        result = engine.update_weights(list(alt_hf.state_dict().items()), v, probe)
    finally:
        eng.config = old
    assert result.chunks > 10
    restore(engine, base_hf, v + 1)


def test_wrong_probe_raises_naming_both_versions(engine, base_hf, alt_hf):
    prompt = engine.engine.prompt_ids(MESSAGES)
    old = engine.version
    new = old + 1
    stale_probe = Probe(tuple(prompt), tuple(token_logprobs(base_hf, prompt)))  # old weights' log-probs
    with pytest.raises(ProbeMismatch) as err:
        engine.update_weights(alt_hf.named_parameters(), new, stale_probe)
    msg = str(err.value)
    assert f"policy version {new}" in msg and f"version {old}" in msg
    assert err.value.expected_version == new and err.value.engine_version == old
    assert not engine.engine.verified
    # A failed verification is not 'done': resending the same version with a right probe applies it.
    good = Probe(tuple(prompt), tuple(token_logprobs(alt_hf, prompt)))
    assert engine.update_weights(alt_hf.named_parameters(), new, good).applied
    assert engine.engine.verified
    restore(engine, base_hf, new + 1)


def test_many_seeded_requests_at_once_do_not_crash_the_cpu_engine(engine):
    """Regression: vLLM's CPU worker rewinds a seeded request's generator when it discards
    the token sampled during a partial (chunked) prefill, and CPU generators have no offset
    ("CPU Generator does not use offset"), which killed the engine as soon as concurrent
    seeded prompts exceeded one step's token budget (a concurrent evaluation did)."""
    prompts = [[(7 * i + j) % 200 + 5 for j in range(200)] for i in range(24)]  # 4800 prompt tokens
    sampling = SamplingConfig(n=4, temperature=1.0, max_tokens=4, seed=3, ignore_eos=True)
    outs = engine.generate_many(prompts, sampling)
    assert len(outs) == 24 and all(len(o) == 4 and all(len(s.token_ids) == 4 for s in o) for o in outs)
    again = engine.generate_many(prompts[:2], sampling)  # seeded: reproducible
    assert [list(s.token_ids) for s in again[0]] == [list(s.token_ids) for s in outs[0]]


def cached_prompt_tokens(engine, ids: list[int]) -> int:
    """How many of ``ids`` a one-token request read from vLLM's prefix cache."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    eng = engine.engine
    params = SamplingParams(max_tokens=1, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
    stream = eng.llm.generate({"prompt_token_ids": ids}, params, f"cache-probe-{uuid.uuid4().hex}")
    out = engine.submit(eng._final(stream, "prefix-cache probe")).result(timeout=eng.config.timeout_s)
    return int(out.num_cached_tokens or 0)


def test_weight_update_clears_the_prefix_cache(engine, base_hf, alt_hf):
    """Prompt KV cached under the old weights must not be reused under the new ones: after an
    update, samples on the same prompt carry the new weights' log-probs. (Reusing the old
    weights' cached block would shift them by ~0.04 on average, 4x TOL_MEAN: measured by
    feeding transformers' alt model the base model's KV for the first 128 tokens.)"""
    assert engine.config.enable_prefix_caching
    block = engine.engine.llm.vllm_config.cache_config.block_size
    max_tokens = 8
    # As many full (cacheable) blocks as fit, plus one token: nearly the whole prompt is cached.
    length = (engine.config.max_model_len - max_tokens - 1) // block * block + 1
    assert length > block, f"block size {block} leaves no full block to cache in {length} tokens"
    prompt = [(7 * i) % 200 + 5 for i in range(length)]
    sampling = SamplingConfig(n=4, max_tokens=max_tokens, seed=13, ignore_eos=True)
    engine.generate(prompt, sampling)  # caches the prompt's blocks under the base weights
    assert cached_prompt_tokens(engine, prompt) >= block, "prefix caching did not reuse the prompt"
    v = engine.version + 1
    try:
        engine.update_weights(alt_hf.state_dict().items(), v)
        samples = engine.generate(prompt, sampling)
    finally:
        restore(engine, base_hf, v + 1)
    err_new, err_old = [], []
    for s in samples:
        ids = prompt + s.token_ids.tolist()
        tok = torch.tensor(s.token_ids.tolist())[:, None]
        for model, errs in ((alt_hf, err_new), (base_hf, err_old)):
            ref = hf_logprobs(model, ids)[length - 1 :].gather(1, tok)[:, 0].numpy()
            errs.append(np.abs(ref - s.logprobs))
    err_new, err_old = np.concatenate(err_new), np.concatenate(err_old)
    assert err_new.mean() < TOL_MEAN and err_new.max() < TOL_MAX
    assert err_old.mean() > 5 * TOL_MEAN  # the two weight sets are told apart at these tokens
    restored = engine.score_tokens(prompt)  # the module's other tests run on the base weights
    assert np.abs(restored - np.asarray(token_logprobs(base_hf, prompt))).mean() < TOL_MEAN
