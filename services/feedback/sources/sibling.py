"""Successful sibling: the first successful response of the same group other than the
sample itself becomes its demonstration (``distil.templates.sibling_solution``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from distil.templates import sibling_solution

from ..group import GroupContext


class SiblingSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["sibling"] = "sibling"
    strip_thinking: bool = True


class SiblingSource:
    kind = "sibling"

    def __init__(self, config: SiblingSourceConfig | None = None) -> None:
        self.config = config or SiblingSourceConfig()

    def apply(self, ctx: GroupContext) -> None:
        success = [item.success for item in ctx.items]
        for i, item in enumerate(ctx.items):
            text = sibling_solution(ctx.responses, success, i, strip_thinking=self.config.strip_thinking)
            if text:
                item.texts[self.kind] = text
                if item.solution is None:
                    item.solution = text
        if any(success):
            ctx.count("groups_with_sibling")
