"""The vLLM engine wrapper shared by the rollout and teacher services.

    from distil.engine import EngineConfig, EngineRunner, SamplingConfig

    with EngineRunner(EngineConfig(model=str(path))) as engine:
        samples = engine.generate([{"role": "user", "content": "hi"}], SamplingConfig(n=4))
        top = engine.score_prompt_topk(ids, start, k=20)
        engine.update_weights(model.named_parameters(), version=1, probe=probe)

Importing this package does not import vLLM; building an engine does. See docs/services.md.
"""

from distil.engine.config import EngineConfig, SamplingConfig
from distil.engine.errors import EngineError, EngineTimeout, ProbeMismatch, PromptTooLong, WeightVersionError
from distil.engine.types import Probe, Sample, TopK, UpdateResult

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineRunner",
    "EngineTimeout",
    "Probe",
    "ProbeMismatch",
    "PromptTooLong",
    "Sample",
    "SamplingConfig",
    "TopK",
    "UpdateResult",
    "WeightVersionError",
]


def __getattr__(name: str):
    if name == "Engine":
        from distil.engine.engine import Engine

        return Engine
    if name == "EngineRunner":
        from distil.engine.runner import EngineRunner

        return EngineRunner
    raise AttributeError(name)
