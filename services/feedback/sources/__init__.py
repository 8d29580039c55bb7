"""Feedback sources, configurable per job: one protocol, one file per source, and a
pydantic discriminated union (``kind``) to configure them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..callbacks import CallbackRegistry
from .environment import EnvironmentSource, EnvironmentSourceConfig
from .external import ExternalSource, ExternalSourceConfig
from .human import HumanSource, HumanSourceConfig
from .protocol import FeedbackSource
from .reference import ReferenceSource, ReferenceSourceConfig
from .sibling import SiblingSource, SiblingSourceConfig

SourceConfig = Annotated[
    EnvironmentSourceConfig
    | SiblingSourceConfig
    | ReferenceSourceConfig
    | ExternalSourceConfig
    | HumanSourceConfig,
    Field(discriminator="kind"),
]

__all__ = [
    "EnvironmentSourceConfig",
    "ExternalSourceConfig",
    "FeedbackSource",
    "HumanSourceConfig",
    "ReferenceSourceConfig",
    "SiblingSourceConfig",
    "SourceConfig",
    "make_source",
]


def make_source(
    config: SourceConfig, callbacks: CallbackRegistry | None = None, callback_base_url: str | None = None
) -> FeedbackSource:
    if isinstance(config, EnvironmentSourceConfig):
        return EnvironmentSource(config)
    if isinstance(config, SiblingSourceConfig):
        return SiblingSource(config)
    if isinstance(config, ReferenceSourceConfig):
        return ReferenceSource(config)
    if isinstance(config, HumanSourceConfig):
        return HumanSource(config)
    return ExternalSource(config, callbacks, callback_base_url)
