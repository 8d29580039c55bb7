"""LoRA adapter updates on a real vLLM CPU engine (tiny random Llama), checked against
transformers + peft in fp32: the adapter is served, verified with the learner's probe,
ordered and idempotent per version, and a wrong or malformed one is an error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distil.engine import EngineError, ProbeMismatch, SamplingConfig, WeightVersionError
from distil.engine.config import EngineLoraConfig
from services.learner.lora import peft_adapter
from services.learner.publish import make_probe
from tests.engine.engine_helpers import hf_model, tiny_engine_config, token_logprobs
from tests.engine.test_engine_adapter import trained_lora

pytestmark = pytest.mark.slow

CHECK_IDS = [1, 504, 3458, 282, 260, 2000, 17, 42, 99, 7, 1234]
PROBE_IDS = [1, 12, 9000, 33, 4321, 5, 77, 808]
TOL_MEAN = 0.01  # bf16 engine vs fp32 transformers + peft, mean |Δ log-prob|
TOL_MAX = 0.1


@pytest.fixture(scope="module")
def engine(vllm_tiny_dir, tmp_path_factory):
    from distil.engine import EngineRunner

    lora = EngineLoraConfig(max_rank=8, adapter_dir=str(tmp_path_factory.mktemp("adapters")))
    runner = EngineRunner(tiny_engine_config(vllm_tiny_dir, max_num_seqs=4, probe_tolerance=0.02, lora=lora))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def students(vllm_tiny_dir):
    """Two LoRA students (fp32 peft models) with different adapters."""
    return [trained_lora(vllm_tiny_dir, seed=s).eval() for s in (0, 1)]


def served(engine) -> np.ndarray:
    return np.asarray(engine.score_tokens(CHECK_IDS))


def assert_serves(engine, model) -> None:
    got, want = served(engine), np.asarray(token_logprobs(model, CHECK_IDS))
    diff = np.abs(got - want)
    assert diff.mean() < TOL_MEAN and diff.max() < TOL_MAX, (diff.mean(), diff.max())


def test_adapter_updates_are_served_verified_and_replace_each_other(engine, students, vllm_tiny_dir):
    base = served(engine)
    assert_serves(engine, hf_model(vllm_tiny_dir))
    first, second = students
    r = engine.update_adapter(peft_adapter(first), 1, make_probe(first, PROBE_IDS))
    assert r.applied and r.version == engine.version == 1 and r.probe_error < 0.02
    assert_serves(engine, first)
    assert np.abs(served(engine) - base).mean() > 0.1  # the adapter really changed what is served
    assert all(s.policy_version == 1 for s in engine.generate([5, 6, 7], SamplingConfig(n=2, max_tokens=4)))

    r = engine.update_adapter(peft_adapter(second), 2, make_probe(second, PROBE_IDS))
    assert r.applied and engine.version == 2
    assert_serves(engine, second)
    # one adapter in vLLM: the new one, under a new id; the previous one was removed
    loras = engine._wait(engine.engine.llm.list_loras(), 60, "listing LoRAs")
    assert set(loras) == {engine.engine.lora_request.lora_int_id} == {2}


def test_repeated_version_is_a_no_op_and_an_older_one_is_refused(engine, students):
    first, second = students
    r = engine.update_adapter(peft_adapter(second), 2, make_probe(second, PROBE_IDS))
    assert not r.applied
    with pytest.raises(WeightVersionError, match="version 1 arrived after version 2"):
        engine.update_adapter(peft_adapter(first), 1, make_probe(first, PROBE_IDS))
    assert_serves(engine, second)


def test_corrupt_adapter_fails_the_probe_naming_both_versions(engine, students):
    first, second = students
    good = peft_adapter(first)
    corrupt = dataclasses.replace(
        good, tensors={n: (t * 3 if ".lora_B." in n else t) for n, t in good.tensors.items()}
    )
    with pytest.raises(ProbeMismatch, match=r"(?s)policy version 3 \(the engine was at version 2\)") as exc:
        engine.update_adapter(corrupt, 3, make_probe(first, PROBE_IDS))
    assert exc.value.expected_version == 3 and exc.value.engine_version == 2
    assert not engine.engine.verified
    # resending the version with the right adapter applies it and verifies again
    r = engine.update_adapter(good, 3, make_probe(first, PROBE_IDS))
    assert r.applied and engine.engine.verified
    assert_serves(engine, first)


def test_malformed_adapters_are_refused_and_the_engine_keeps_serving(engine, students, vllm_tiny_dir):
    first = students[0]
    good = peft_adapter(first)
    with pytest.raises(ValueError, match=r"version 4 refused: adapter rank r=16 exceeds .*max_rank=8"):
        engine.update_adapter(
            peft_adapter(trained_lora(vllm_tiny_dir, r=16)), 4, make_probe(first, PROBE_IDS)
        )
    # vLLM's CPU build accepts an adapter that does not fit the model: refused before it gets there
    name = next(n for n in good.tensors if n.endswith("q_proj.lora_A.weight"))
    wrong_shape = dataclasses.replace(good, tensors=good.tensors | {name: torch.zeros(4, 3)})
    with pytest.raises(ValueError, match=r"version 4 refused: .*q_proj: lora_B @ lora_A is \[64, 3\]"):
        engine.update_adapter(wrong_shape, 4, make_probe(first, PROBE_IDS))
    # one vLLM itself refuses (DoRA): the engine keeps serving the verified previous version
    dora = dataclasses.replace(good, config=good.config | {"use_dora": True})
    with pytest.raises(
        EngineError, match=r"(?s)could not load the LoRA adapter of version 4.*DoRA.*still serves version 3"
    ):
        engine.update_adapter(dora, 4, make_probe(first, PROBE_IDS))
    assert engine.version == 3 and engine.engine.verified
    assert_serves(engine, first)
