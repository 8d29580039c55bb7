"""The one protocol every sandbox backend implements."""

from __future__ import annotations

from typing import Protocol

from .result import ExecResult, Isolation


class Sandbox(Protocol):
    """Runs one untrusted Python program and reports what happened.

    ``files`` are extra files placed next to the program (e.g. a test harness); the
    program itself is ``main.py`` in the working directory.
    """

    @property
    def isolation(self) -> Isolation: ...

    def run(
        self,
        program: str | bytes,
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
    ) -> ExecResult: ...

    def close(self) -> None: ...
