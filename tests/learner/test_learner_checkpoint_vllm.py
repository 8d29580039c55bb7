"""A learner checkpoint's ``model/`` directory is what users and engines load: a fresh vLLM
CPU engine started on it scores like transformers loading the same directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import hf_logprobs, hf_model, tiny_engine_config, token_logprobs

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
TOL_MEAN = 0.01  # bf16 engine vs fp32 transformers, mean |Δ log-prob| (as in tests/engine)
TOL_MAX = 0.1


def checkpoint_after_one_step(model_dir, root):
    """The learner's own code: one training step on ``model_dir``, then a checkpoint."""
    from transformers import AutoModelForCausalLM

    from distil.losses import ObjectiveConfig
    from services.learner.checkpoint import CheckpointManager, Progress
    from services.learner.config import TrainConfig
    from services.learner.policy import PolicyLogprobs
    from services.learner.step import Learner
    from tests.learner.test_learner_step import samples

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # lr 1e-2: one step moves the log-probs by ~0.1 on average, far beyond bf16 noise.
    learner = Learner(PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(lr=1e-2), pad_id=0)
    learner.step(samples(n=3))
    manager = CheckpointManager(root, keep_last=1, tokenizer_dir=model_dir)
    return manager.save(learner, Progress(policy_version=learner.state.step)) / "model"


def test_checkpoint_model_directory_serves_in_vllm(vllm_tiny_dir, tmp_path):
    from distil.engine import EngineRunner, SamplingConfig

    model_dir = checkpoint_after_one_step(vllm_tiny_dir, tmp_path / "ckpt")
    assert (model_dir / "model.safetensors").is_file()
    config = tiny_engine_config(model_dir, max_num_seqs=4, max_logprobs=20)
    with EngineRunner(config) as engine:
        prompt = engine.engine.prompt_ids(MESSAGES)  # the checkpoint's tokenizer and chat template
        response = engine.generate(prompt, SamplingConfig(max_tokens=12, seed=1))[0].token_ids.tolist()
        ids = prompt + response
        top = engine.score_prompt_topk(ids, 1, 20)

    ref = hf_logprobs(hf_model(model_dir), ids)
    tok_ref = ref.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
    err = np.abs(top.token_logprobs - tok_ref)
    assert err.mean() < TOL_MEAN and err.max() < TOL_MAX
    at_engine_ids = ref.gather(1, torch.from_numpy(top.ids).long()).numpy()
    assert np.abs(at_engine_ids - top.logprobs).mean() < TOL_MEAN
    # The engine serves the trained weights, not the ones training started from.
    before = np.asarray(token_logprobs(hf_model(vllm_tiny_dir), ids))
    assert np.abs(top.token_logprobs - before).mean() > 5 * TOL_MEAN
