"""Reference solution: the task's reference solution as the demonstration (OPSD-style),
for responses that have no demonstration yet."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..group import GroupContext


class ReferenceSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["reference"] = "reference"
    only_failures: bool = Field(default=False, description="give the reference only to failed responses")
    fence_code: bool = Field(default=True, description="wrap a code task's reference in a ```python block")


class ReferenceSource:
    kind = "reference"

    def __init__(self, config: ReferenceSourceConfig | None = None) -> None:
        self.config = config or ReferenceSourceConfig()

    def apply(self, ctx: GroupContext) -> None:
        reference = ctx.task.reference_solution
        if not reference:
            ctx.count("reference_missing")
            return
        if ctx.task.verifier == "code" and self.config.fence_code and "```" not in reference:
            reference = f"```python\n{reference.rstrip()}\n```"
        for item in ctx.items:
            if self.config.only_failures and item.success:
                continue
            item.texts[self.kind] = reference
            if item.solution is None:
                item.solution = reference
