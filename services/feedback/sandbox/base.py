"""What both backends share: slots, limits, in-memory inputs, classification."""

from __future__ import annotations

import math
import os
import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .classify import classify
from .config import SandboxConfig
from .reaper import become_subreaper, reap_orphans_of
from .result import ExecResult, Isolation
from .runner import Limits, launch, memfd_with
from .runtime import Runtime, resolve_runtime
from .slots import Slot, SlotPool

_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


@dataclass
class Launch:
    """A backend's plan for one run."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    pass_fds: list[int] = field(default_factory=list)
    preexec_extra: Callable[[], None] | None = None
    cleanup: Callable[[], None] = lambda: None
    always_sweep: bool = False
    info_fd: int | None = None  # read end of bwrap's --info-fd
    close_after_spawn: list[int] = field(default_factory=list)


class BaseSandbox(ABC):
    # Orphans of a run come back to this process to be reaped (process backend: a daemon's
    # parent exits; the host's init may never reap, and zombies count against NPROC).
    needs_subreaper = False

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.slots = SlotPool(config.slots, config.uid_base, config.slot_wait_s)
        self.runtime: Runtime = resolve_runtime(
            config.python,
            config.packages,
            drop_uid=self.slots.drop_uid,
            cache_dir=Path(config.runtime_cache_dir),
        )
        if self.needs_subreaper:
            become_subreaper()

    @property
    @abstractmethod
    def isolation(self) -> Isolation: ...

    @abstractmethod
    def _plan(self, slot: Slot, files: dict[str, int]) -> Launch:
        """``files`` maps file names to readable fds holding their contents."""

    @abstractmethod
    def _decode(self, wait_status: int) -> tuple[int | None, int | None]:
        """The program's (exit code, signal number) from the launched process's status."""

    def limits(self, timeout_s: float, memory_mb: int) -> Limits:
        return Limits(
            cpu_s=math.ceil(timeout_s) + 1,
            address_space_bytes=memory_mb << 20,
            file_size_bytes=self.config.file_size_mb << 20,
            open_files=self.config.max_open_files,
            processes=self.config.max_processes if self.slots.drop_uid else None,
        )

    def _error(self, detail: str) -> ExecResult:
        return ExecResult(status="sandbox_error", detail=detail, isolation=self.isolation.level)

    def run(
        self,
        program: str | bytes,
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
    ) -> ExecResult:
        timeout_s = timeout_s or self.config.timeout_s
        memory_mb = memory_mb or self.config.memory_mb
        contents = {"main.py": _as_bytes(program)}
        for name, data in (files or {}).items():
            if not _FILE_NAME.match(name) or name == "main.py":
                return self._error(f"bad extra file name {name!r}: use a plain name like harness.py")
            contents[name] = _as_bytes(data)
        limits = self.limits(timeout_s, memory_mb)
        with self.slots.acquire() as slot:
            fds: list[int] = []
            plan: Launch | None = None
            try:
                stdin_fd = (
                    memfd_with(_as_bytes(stdin), "stdin") if stdin else os.open(os.devnull, os.O_RDONLY)
                )
                fds.append(stdin_fd)
                file_fds = {}
                for name, data in contents.items():
                    file_fds[name] = memfd_with(data, name)
                    fds.append(file_fds[name])
                plan = self._plan(slot, file_fds)
                extra = plan.preexec_extra

                def preexec() -> None:
                    limits.apply()
                    if extra is not None:
                        extra()

                raw = launch(
                    plan.argv,
                    env=plan.env,
                    stdin_fd=stdin_fd,
                    pass_fds=plan.pass_fds,
                    cwd=plan.cwd,
                    user=slot.uid,
                    preexec=preexec,
                    timeout_s=timeout_s,
                    stdout_cap=self.config.stdout_limit_bytes,
                    stderr_cap=self.config.stderr_limit_bytes,
                    on_kill=lambda: self.slots.sweep(slot),
                    info_fd=plan.info_fd,
                    close_after_spawn=plan.close_after_spawn,
                )
                if plan.always_sweep:
                    self.slots.sweep(slot)
                if slot.uid is not None and (plan.always_sweep or raw.killed):
                    reap_orphans_of(slot.uid)
            except (OSError, subprocess.SubprocessError) as exc:
                return self._error(f"could not start the program: {exc}")
            finally:
                for fd in fds:
                    os.close(fd)
                if plan is not None:
                    for fd in plan.close_after_spawn:
                        os.close(fd)
                    plan.cleanup()
        exit_code, signo = self._decode(raw.wait_status)
        if exit_code == 1 and signo is None and self._setup_failed(raw.stderr):
            return self._error(raw.stderr.decode("utf-8", "replace").strip()[:500])
        return classify(raw, exit_code=exit_code, signo=signo, isolation=self.isolation.level)

    def _setup_failed(self, stderr: bytes) -> bool:
        return False

    def probe(self) -> ExecResult:
        """Run a trivial program; a backend that cannot is unusable on this host."""
        return self.run("import sys\nprint('ok')\n", timeout_s=20)

    def close(self) -> None:
        """Give back the slot uid range."""
        self.slots.close()
