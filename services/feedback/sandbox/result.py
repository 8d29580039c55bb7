"""What a sandbox run returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["ok", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error"]


class Isolation(BaseModel):
    """What a backend actually enforces on this host (reported with every result)."""

    model_config = ConfigDict(frozen=True)

    level: Literal["namespaces", "process"]
    namespaces: list[str] = []
    network: bool = True
    filesystem: str = "host"
    uid_drop: bool = False
    rlimits: list[str] = []
    cgroup: str = "unavailable"
    seccomp: str = "off"


class ExecResult(BaseModel):
    """One run of one program."""

    status: Status
    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0
    isolation: str = "none"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"
