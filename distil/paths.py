"""Where distil keeps its state (embedded Redis, models, checkpoints, job store)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The data directory: ``$DISTIL_DATA_DIR`` or ``./data``, created on first use."""
    path = Path(os.environ.get("DISTIL_DATA_DIR", "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
