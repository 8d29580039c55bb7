"""Typed settings of the engine wrapper: how an engine is built and how a request samples."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineLoraConfig(BaseModel):
    """Serve the policy as base weights + a LoRA adapter that the learner updates in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        64, description="largest adapter rank accepted (vLLM's max_lora_rank; the paper's Table 6 uses 64)"
    )
    adapter_dir: str | None = Field(
        None,
        description="where adapters are written for vLLM to load, one directory per version "
        "(None: <data dir>/engine-adapters)",
    )


class EngineConfig(BaseModel):
    """One vLLM engine (rollout policy or self-teacher). Same fields on CPU and GPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Hugging Face directory of the weights (see distil.models.resolve_model)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="auto: bfloat16 where this machine runs it natively (CUDA with bf16, CPUs with "
        "AVX512_BF16 or AMX), else float32 (distil.hardware); an explicit dtype wins, with a warning "
        "when it is emulated here",
    )
    max_model_len: int = Field(2048, ge=16)
    max_num_seqs: int = Field(64, ge=1, description="continuous-batching width")
    max_logprobs: int = Field(100, ge=1, description="largest top-K a request may ask for")
    kv_cache_gib: float | None = Field(
        4.0, gt=0, description="KV cache size in GiB (None: vLLM sizes it from gpu_memory_utilization)"
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = Field(False, description="skip graph compilation: fast start, slower steps")
    enable_prefix_caching: bool = True
    seed: int = 0
    enable_thinking: bool = Field(
        False,
        description="chat template's thinking switch (a job sets it from its top-level enable_thinking)",
    )
    overlong_prompt: Literal["error", "truncate_left"] = Field(
        "error", description="a prompt that leaves no room to generate: refuse it, or cut its start"
    )
    weight_chunk_mib: float = Field(256.0, gt=0, description="size of one weight-update message")
    weight_transport: Literal["file", "rpc"] = Field(
        "file",
        description="file: chunks as safetensors files in weight_dir (same host, fewest copies); "
        "rpc: chunks as bytes through vLLM's collective RPC",
    )
    weight_dir: str = Field("/dev/shm", description="where 'file' transport writes chunks (a tmpfs is best)")
    pause_mode: Literal["wait", "keep", "abort"] = Field(
        "wait",
        description="in-flight requests during a weight update: finish on the old weights (wait), "
        "freeze and resume on the new ones (keep), or abort",
    )
    probe_tolerance: float = Field(
        0.1,
        gt=0,
        description="max mean |log-prob difference| between the learner's probe and the engine after an "
        "update; must exceed the engine's numeric noise (bf16 vs an fp32 learner: ~0.03-0.06 on the 135M model)",
    )
    timeout_s: float = Field(600.0, gt=0, description="limit for one engine call (generate, score, update)")
    lora: EngineLoraConfig | None = Field(
        None, description="None: full-weight updates only; set: LoRA adapter updates (update_adapter)"
    )


class SamplingConfig(BaseModel):
    """How responses are sampled. Log-probs are always those of the processed distribution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_tokens: int = Field(512, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = Field(False, description="keep sampling past end-of-sequence (benchmarks)")


def training_sampling_errors(sampling: SamplingConfig) -> dict[str, str]:
    """Sampling settings a *training* rollout must not use, by field, with why (empty: fine).

    vLLM's processed log-probs after top-p / top-k are renormalised over the kept tokens; the
    learner re-applies only the temperature, so its log-prob of every sampled token is lower
    and every importance ratio is biased below 1 (GRPO's clip then zeroes the
    negative-advantage tokens). Evaluation may truncate (``evaluation.top_p``).
    """
    why = (
        "training rollouts must sample the whole tempered distribution: vLLM renormalises its "
        "log-probs over the tokens {what} keeps, the learner applies only the temperature, so every "
        "importance ratio would be biased below 1; set {ok} (truncate in evaluation only)"
    )
    out = {}
    if sampling.top_p < 1.0:
        out["top_p"] = why.format(what="top-p", ok="1.0")
    if sampling.top_k > 0:
        out["top_k"] = why.format(what="top-k", ok="0 (off)")
    return out
