"""Reference computations with transformers (fp32) for checking vLLM engines."""

from __future__ import annotations

from pathlib import Path

import torch


class EngineHost:
    """A real vLLM engine (CPU build) that takes the learner's weight updates and scores
    tokens; ``ray.remote(EngineHost)`` puts it in a Ray actor, as a service replica holds it."""

    def __init__(self, config):
        from distil.engine.runner import EngineRunner

        self.runner = EngineRunner(config)

    def update_weights(self, tensors, version, probe):
        r = self.runner.update_weights(tensors.items(), version, probe)
        return {"version": r.version, "applied": r.applied, "probe_error": r.probe_error}

    def score(self, ids):
        import numpy as np

        return np.asarray(self.runner.score_tokens(ids))

    def close(self):
        self.runner.close()


def tiny_engine_config(model: Path | str, **overrides):
    """The small CPU vLLM engine the tests start (eager, 0.5 GiB KV cache, 256 tokens)."""
    from distil.engine import EngineConfig

    return EngineConfig(
        **{"model": str(model), "enforce_eager": True, "kv_cache_gib": 0.5, "max_model_len": 256, **overrides}
    )


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def hf_logprobs(model, ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    """[len-1, V] log-probs of the next token at every position, at ``temperature``."""
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits / temperature, dim=-1)


def token_logprobs(model, ids: list[int]) -> list[float]:
    lp = hf_logprobs(model, ids)
    return lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
