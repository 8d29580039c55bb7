"""Environment output: the verifier's own feedback text (first error, timeout, format
problem or wrong answers; nothing when everything passed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..group import GroupContext


class EnvironmentSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["environment"] = "environment"


class EnvironmentSource:
    kind = "environment"

    def __init__(self, config: EnvironmentSourceConfig | None = None) -> None:
        self.config = config or EnvironmentSourceConfig()

    def apply(self, ctx: GroupContext) -> None:
        for item, grade in zip(ctx.items, ctx.grades, strict=True):
            if grade.feedback:
                item.texts[self.kind] = grade.feedback
