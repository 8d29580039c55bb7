"""Learner settings. Defaults follow the paper's coding setting (Table 4) unless noted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.learner.lora import LoraSettings


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(default=1e-6, gt=0, description="AdamW learning rate (Table 4, coding).")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warmup, then constant (Table 4).")
    weight_decay: float = Field(default=0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(default=1e-8, gt=0)
    grad_clip: float = Field(default=1.0, gt=0)
    teacher_ema_rate: float = Field(default=0.01, ge=0, le=1, description="0 = frozen initial teacher.")
    token_budget: int = Field(default=8192, gt=0, description="Padded tokens per micro-batch.")
    logits_chunk: int = Field(default=1024, gt=0, description="Sequence chunk for the log-prob gather.")
    logits_keep_mb: int = Field(
        default=256,
        ge=0,
        description=(
            "Keep a micro-batch's fp32 [B,T,V] logits for the backward pass when they take at most "
            "this many MB (saves recomputing the head); larger ones are recomputed chunk by chunk. "
            "0 = always recompute."
        ),
    )
    activation_checkpointing: bool = Field(
        default=False,
        description="Recompute each block's activations in backward (less memory, ~1/3 more compute).",
    )
    cpu_threads: int | None = Field(
        default=None, gt=0, description="Torch threads per CPU rank; None = the usable cores / ranks."
    )
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description=(
            "Compute dtype over fp32 master weights (autocast on one rank, FSDP2 mixed precision on "
            "several). auto: bfloat16 on a GPU with bf16, float32 on CPU (the measured CPU results are "
            "fp32; bfloat16 on a CPU without native bf16 is emulated and warned about)."
        ),
    )
    max_nonfinite_steps: int = Field(default=3, ge=1, description="Fail the job after this many in a row.")
    lora: LoraSettings | None = Field(default=None, description="None = full fine-tuning (default).")
