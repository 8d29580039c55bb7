"""What a refused job spec says: ``{field path: message}`` of ``validate_spec``'s SpecError."""

from __future__ import annotations

import pytest

from distil.gateway.spec import validate_spec
from distil.jobs import SpecError


def errors_of(doc) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        validate_spec(doc)
    return {e["loc"]: e["msg"] for e in info.value.errors}
