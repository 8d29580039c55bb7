"""The rollout stage: prompt groups in, rollout groups (G sampled responses each) out."""

from __future__ import annotations

import json
import zlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distil.bus import Group, Response
from distil.engine import EngineConfig, SamplingConfig
from distil.engine.config import training_sampling_errors
from distil.engine.runner import EngineRunner
from distil.timeline import timed


class RolloutConfig(BaseModel):
    """What the rollout service runs: an engine and how to sample G responses per prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=8))
    max_inflight_groups: int = Field(64, ge=1, description="groups sampled concurrently")
    unverified_wait_s: float = Field(
        600.0, gt=0, description="after a failed weight verification, how long groups wait for a good update"
    )

    @field_validator("sampling")
    @classmethod
    def _full_distribution(cls, v: SamplingConfig) -> SamplingConfig:
        # These samples are trained on; evaluation samples through /v1/completions instead.
        if errors := training_sampling_errors(v):
            raise ValueError("; ".join(f"sampling.{name}: {msg}" for name, msg in errors.items()))
        return v


def group_prompt(group: Group) -> list[int] | list[dict[str, str]]:
    """Token ids when the group carries them, else chat messages (metadata or prompt_text)."""
    if len(group.prompt_token_ids):
        return [int(t) for t in group.prompt_token_ids]
    raw = group.metadata.get("messages")
    if raw:
        return json.loads(raw)
    if not group.prompt_text:
        raise ValueError(f"group {group.group_id}: no prompt_token_ids, messages or prompt_text")
    return [{"role": "user", "content": group.prompt_text}]


class RolloutStage:
    """Samples ``sampling.n`` responses per prompt group on one engine."""

    def __init__(
        self, runner: EngineRunner, sampling: SamplingConfig, *, unverified_wait_s: float = 600.0
    ) -> None:
        self.runner = runner
        self.sampling = sampling
        self.unverified_wait_s = unverified_wait_s
        self.groups = 0
        self.tokens = 0

    async def handle(self, group: Group) -> Group:
        engine = self.runner.engine
        ids = engine.fit_prompt(engine.prompt_ids(group_prompt(group)))  # PromptTooLong -> dead letter
        sampling = self.sampling
        if sampling.seed is not None:  # reproducible per group, distinct across groups
            sampling = sampling.model_copy(
                update={"seed": (sampling.seed + zlib.crc32(group.group_id.encode())) % 2**31}
            )
        # Never sample from weights that failed their probe: wait for a verified update.
        await self.runner.call(engine.wait_verified, self.unverified_wait_s)
        with timed(group, "rollout"):
            samples = await self.runner.call(engine.generate, ids, sampling)
        group.prompt_token_ids = np.asarray(ids, dtype=np.int32)
        group.responses = [
            Response(
                token_ids=s.token_ids,
                logprobs=s.logprobs,
                finish_reason=s.finish_reason,
                truncated=s.truncated,
                text=s.text,
            )
            for s in samples
        ]
        group.policy_version = min(s.policy_version for s in samples)
        # vLLM's processed log-probs are at the sampling temperature (greedy: at 1); the
        # learner compares them with its own at the same temperature.
        group.sampling_temperature = sampling.temperature if sampling.temperature > 0 else 1.0
        self.groups += 1
        self.tokens += sum(len(s.token_ids) for s in samples)
        return group
