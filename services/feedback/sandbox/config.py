"""Sandbox settings. Every default is written once, here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """How untrusted programs are run.

    ``backend="auto"`` uses bubblewrap with all namespaces when the host allows it and
    otherwise falls back to the weaker ``process`` backend (rlimits, uid drop, clean
    environment, private working directory, but no filesystem or network isolation),
    unless ``require_isolation`` is set, in which case it refuses to run instead.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "bwrap", "process"] = "auto"
    require_isolation: bool = False

    timeout_s: float = Field(default=10.0, gt=0, le=3600, description="wall clock, measured from exec")
    memory_mb: int = Field(default=1024, ge=64, description="address-space limit of each process")
    stdout_limit_bytes: int = Field(default=1 << 20, ge=1024)
    stderr_limit_bytes: int = Field(default=64 << 10, ge=1024)
    file_size_mb: int = Field(default=16, ge=1, description="RLIMIT_FSIZE: largest file a program may write")
    tmpfs_mb: int = Field(default=64, ge=1, description="size of the writable working directory and /dev/shm")
    max_processes: int = Field(default=64, ge=4, description="RLIMIT_NPROC of the slot uid (needs root)")
    max_open_files: int = Field(default=64, ge=16)

    slots: int = Field(default=8, ge=1, le=512, description="runs that may execute at the same time")
    slot_wait_s: float = Field(default=600.0, gt=0, description="how long a run waits for a free slot")
    uid_base: int = Field(default=62000, ge=1000, description="slot i runs as uid/gid uid_base + i (as root)")

    python: str | None = Field(
        default=None,
        description="interpreter inside the sandbox; default: this one if the slot uid can reach it, "
        "else /usr/bin/python3.X of the same version",
    )
    packages: list[str] = Field(
        default_factory=lambda: ["numpy"],
        description="top-level packages from this environment exposed read-only to programs",
    )
    seccomp: bool = True
    workdir_root: str | None = Field(
        default=None,
        description="process backend: where per-run working dirs are made (default: the temp dir)",
    )
    runtime_cache_dir: str = Field(
        default="/var/cache/distil/sandbox-runtime",
        description="where packages and bwrap are copied when other uids cannot read them in place",
    )
