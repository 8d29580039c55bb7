"""Ray Serve deployment of the rollout service.

    serve.run(build_app({"config": {"engine": {"model": "/path"}}, "job": "job1"}))

One replica = one vLLM engine. With ``job`` set, the replica consumes that job's
``prompts`` stream (consumer group ``rollout``) and writes ``rollouts``, with up to
``max_inflight_groups`` groups sampled concurrently. HTTP: ``POST /v1/completions``
(OpenAI-compatible, the current policy), ``GET /health``, ``GET /metrics`` (Prometheus
text). The learner calls ``update_weights`` (or, for a LoRA student with ``engine.lora``
set, ``update_adapter``) through a deployment handle. Serve calls
``check_health``; a replica whose engine died is restarted and the bus redelivers its
unacknowledged groups to a live consumer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from distil.bus import Bus
from distil.engine import PromptTooLong, SamplingConfig
from distil.engine.bus_loop import LoopStats, resolve_tensors, start_consumer
from distil.engine.runner import EngineRunner

from .stage import RolloutConfig, RolloutStage

log = logging.getLogger(__name__)
app = FastAPI(title="distil rollout")


class CompletionRequest(BaseModel):
    """The OpenAI completions fields the policy server honours."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[int]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None


@serve.deployment(
    name="rollout", max_ongoing_requests=256, health_check_period_s=10, health_check_timeout_s=30
)
@serve.ingress(app)
class RolloutDeployment:
    def __init__(
        self, config: dict[str, Any], job: str | None = None, bus: dict[str, Any] | None = None
    ) -> None:
        self.config = RolloutConfig.model_validate(config)
        self.runner = EngineRunner(self.config.engine)
        self.stage = RolloutStage(
            self.runner, self.config.sampling, unverified_wait_s=self.config.unverified_wait_s
        )
        self.stats = LoopStats()
        self.stop = threading.Event()
        self.bus: Bus | None = None
        self.thread: threading.Thread | None = None
        if job:
            self.bus, self.thread = start_consumer(
                bus,
                job,
                ("prompts", "rollout", "rollouts"),
                self.stage.handle,
                self.runner._loop,
                stop=self.stop,
                max_inflight=self.config.max_inflight_groups,
                permanent=(PromptTooLong, ValueError),
                stats=self.stats,
                name="rollout-consumer",
                expect_weights=self.runner.engine.expect_version,
            )

    # ------------------------------------------------------------------ health & metrics

    async def check_health(self) -> None:
        engine = self.runner.engine
        await self.runner.call(engine.llm.check_health)
        if self.thread is not None and not self.thread.is_alive() and not self.stop.is_set():
            raise RuntimeError("the rollout consumer loop stopped; restarting the replica")

    @app.get("/health")
    async def health(self) -> dict:
        try:
            await self.check_health()
        except Exception as exc:
            raise HTTPException(503, f"unhealthy: {exc}") from exc
        engine = self.runner.engine
        if not engine.verified:  # reported, but not a reason for Serve to restart the replica
            raise HTTPException(503, f"{engine.unverified_reason()}; waiting for a verified update")
        return {"status": "ok", "policy_version": engine.version, "verified": True}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> str:
        rows = {
            "distil_rollout_groups_total": self.stage.groups,
            "distil_rollout_tokens_total": self.stage.tokens,
            "distil_rollout_committed_total": self.stats.committed,
            "distil_rollout_dead_lettered_total": self.stats.dead_lettered,
            "distil_rollout_failed_total": self.stats.failed,
            "distil_rollout_policy_version": self.runner.version,
        }
        return "".join(f"{k} {v}\n" for k, v in rows.items())

    # ------------------------------------------------------------------ OpenAI completions

    @app.post("/v1/completions")
    async def completions(self, req: CompletionRequest) -> dict:
        engine = self.runner.engine
        prompt = engine.tokenizer.encode(req.prompt) if isinstance(req.prompt, str) else req.prompt
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        sampling = SamplingConfig(
            n=req.n,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            stop=stop,
            seed=req.seed,
        )
        try:
            samples = await self.runner.call(engine.generate, prompt, sampling)
        except PromptTooLong as exc:
            raise HTTPException(400, str(exc)) from exc
        choices = []
        for i, s in enumerate(samples):
            choice: dict[str, Any] = {"index": i, "text": s.text, "finish_reason": s.finish_reason}
            if req.logprobs is not None:
                choice["logprobs"] = {
                    "tokens": [engine.tokenizer.decode([t]) for t in s.token_ids.tolist()],
                    "token_logprobs": s.logprobs.tolist(),
                }
            choices.append(choice)
        completion = sum(len(s.token_ids) for s in samples)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model or self.config.engine.model,
            "policy_version": samples[0].policy_version if samples else self.runner.version,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": completion,
                "total_tokens": len(prompt) + completion,
            },
        }

    # ------------------------------------------------------------------ weights (deployment handle)

    async def update_weights(self, named_tensors, version: int, probe=None):
        """Called by the learner: ``handle.update_weights.remote(list_of_(name, tensor), v, probe)``."""
        named_tensors = await resolve_tensors(named_tensors)
        return await self.runner.call(self.runner.engine.update_weights, named_tensors, version, probe)

    async def update_adapter(self, adapter, version: int, probe=None):
        """Called by a LoRA learner: ``handle.update_adapter.remote(LoraAdapter | ObjectRef, v, probe)``
        (the engine needs ``engine.lora``)."""
        adapter = await resolve_tensors(adapter)
        return await self.runner.call(self.runner.engine.update_adapter, adapter, version, probe)

    async def policy_version(self) -> int:
        return self.runner.version

    async def weight_dtype(self) -> str:
        """The dtype this engine holds its weights in, so the learner sends them in it."""
        return str(self.runner.engine.dtype).removeprefix("torch.")

    def __del__(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        self.runner.close()
        if self.bus is not None:
            self.bus.close()


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder: ``{"config": RolloutConfig, "job": str | None, "bus": BusConfig}``."""
    return RolloutDeployment.bind(args["config"], args.get("job"), args.get("bus"))
