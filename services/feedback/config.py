"""Settings of the feedback stage (per job: which sources; per service: sandbox, pool)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .sandbox import SandboxConfig
from .sources import EnvironmentSourceConfig, SiblingSourceConfig, SourceConfig
from .verifiers import VerifierConfig


class FeedbackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sandbox: SandboxConfig = SandboxConfig()
    verifiers: VerifierConfig = VerifierConfig()
    # SDPO's default: environment output, and a successful sibling as the demonstration.
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [EnvironmentSourceConfig(), SiblingSourceConfig()],
    )
    workers: int | None = Field(default=None, ge=1, description="grading threads; default: sandbox slots")
    callback_base_url: str | None = Field(
        default=None, description="this service's public URL, for external endpoints' late answers"
    )
