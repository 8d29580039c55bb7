"""Teacher kinds as a pydantic discriminated union (``kind``), one config per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distil.engine import EngineConfig
from distil.templates import TemplateConfig


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(20, ge=1, description="teacher top-K per position (20 coding, 100 science)")
    temperature: float = Field(1.0, description="teacher temperature; only 1 can be applied exactly")
    max_length: int = Field(4096, ge=16, description="teacher context budget (prompt is cut on the left)")
    template: TemplateConfig = Field(default_factory=TemplateConfig)

    @field_validator("temperature")
    @classmethod
    def _temperature_one(cls, v: float) -> float:
        if v != 1.0:
            raise ValueError(
                "teacher temperature must be 1: vLLM prompt log-probs are the temperature-1 "
                "distribution and a top-K cannot be renormalised at another temperature without the "
                "full vocabulary; apply temperature in the objective instead"
            )
        return v


class _SelfEngine(_Common):
    engine: EngineConfig | None = Field(
        None, description="the teacher's own engine; None = the student's model with default settings"
    )


class SelfEMATeacherConfig(_SelfEngine):
    """The student's EMA copy on its own engine; the learner pushes its weights."""

    kind: Literal["self_ema"] = "self_ema"
    rate: float = Field(0.01, gt=0, le=1, description="EMA rate r: phi <- (1-r) phi + r theta")


class SelfFrozenTeacherConfig(_SelfEngine):
    """The student's initial weights, never updated (OPSD's teacher)."""

    kind: Literal["self_frozen"] = "self_frozen"


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(30.0, gt=0, description="one HTTP request")
    attempts: int = Field(3, ge=1, description="tries per request before giving up on the group")
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(8.0, ge=0)


class ExternalTeacherConfig(_Common):
    """Any OpenAI-compatible server returning prompt log-probs (``vllm serve``, SGLang)."""

    kind: Literal["external"] = "external"
    url: str = Field(description="base URL, e.g. http://host:8000 (the /v1 paths are added)")
    model: str | None = Field(None, description="served model name; None = the server's first model")
    api_key_env: str | None = Field(None, description="environment variable holding a bearer token")
    retry: RetryConfig = Field(default_factory=RetryConfig)


class BlackBoxTeacherConfig(_Common):
    """A teacher that only returns text (an API model without log-probs, a human).

    * ``corrected_response``: the teacher rewrites the response; the rewrite becomes the
      solution in the self-teacher's context and the self-teacher (``scorer``) supplies
      the distribution. Works with every objective.
    * ``sampled_tokens``: the teacher samples ``samples_per_position`` next tokens at every
      response position (one completion of one token per position and sample); they become
      an empirical (one-hot when 1) target. Only objectives that accept sampled targets.
    """

    kind: Literal["black_box"] = "black_box"
    form: Literal["corrected_response", "sampled_tokens"] = "corrected_response"
    url: str = Field(description="OpenAI-compatible base URL (completions; no log-probs needed)")
    model: str | None = None
    api_key_env: str | None = None
    samples_per_position: int = Field(1, ge=1)
    correction_max_tokens: int = Field(1024, ge=1, description="corrected_response: longest rewrite")
    correction_temperature: float = Field(0.0, ge=0, description="corrected_response: sampling temperature")
    scorer: SelfEMATeacherConfig | SelfFrozenTeacherConfig = Field(
        default_factory=SelfFrozenTeacherConfig,
        description="corrected_response: the self-teacher that scores the rewritten context",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)


TeacherConfig = Annotated[
    SelfEMATeacherConfig | SelfFrozenTeacherConfig | ExternalTeacherConfig | BlackBoxTeacherConfig,
    Field(discriminator="kind"),
]
