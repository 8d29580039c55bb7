"""Name -> objective class. The only place that knows every objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distil.losses.base import Objective


def _all() -> dict[str, type[Objective]]:
    from distil.losses.ce import CE
    from distil.losses.distil import DistIL
    from distil.losses.grpo import GRPO
    from distil.losses.opsd import OPSD
    from distil.losses.sdpo import SDPO
    from distil.losses.sft import SFT

    return {cls.name: cls for cls in (DistIL, CE, SDPO, OPSD, GRPO, SFT)}


def objective_class(name: str) -> type[Objective]:
    table = _all()
    if name not in table:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(table)}")
    return table[name]
