"""The one protocol every feedback source implements."""

from __future__ import annotations

from typing import Protocol

from ..group import GroupContext


class FeedbackSource(Protocol):
    """Adds text to some responses of a group: ``feedback`` (what went wrong) or
    ``solution`` (a demonstration). Sources run in the configured order; the first one to
    give a response a solution wins, feedback texts are joined in order."""

    kind: str

    def apply(self, ctx: GroupContext) -> None: ...
