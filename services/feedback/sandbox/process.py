"""The weaker mode for hosts without user namespaces (e.g. unprivileged containers).

Enforced: rlimits, a uid per slot (as root), a clean environment, a private working
directory, a new session, the seccomp filter, kill of the process group and of every
process of the slot uid. NOT enforced: filesystem and network isolation -- the program
sees the host's files (as an unprivileged uid) and the network. Every result says
``isolation: "process"``; set ``require_isolation`` to refuse this mode.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from . import cgroup, seccomp
from .base import BaseSandbox, Launch
from .config import SandboxConfig
from .result import Isolation
from .slots import Slot


class ProcessSandbox(BaseSandbox):
    needs_subreaper = True

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self._seccomp = seccomp.Installer() if config.seccomp and seccomp.supported() else None
        self._pythonpath = os.pathsep.join(
            sorted({os.path.dirname(d) for d in self.runtime.packages.values()})
        )
        self._isolation = Isolation(
            level="process",
            namespaces=[],
            network=True,
            filesystem="host (unprivileged uid, private working directory)",
            uid_drop=self.slots.drop_uid,
            rlimits=self.limits(config.timeout_s, config.memory_mb).names(),
            cgroup=cgroup.detect(),
            seccomp=seccomp.describe() if self._seccomp else "off",
        )

    @property
    def isolation(self) -> Isolation:
        return self._isolation

    def _plan(self, slot: Slot, files: dict[str, int]) -> Launch:
        workdir = tempfile.mkdtemp(prefix="distil-sandbox-", dir=self.config.workdir_root)
        try:
            for name, fd in files.items():
                with open(os.path.join(workdir, name), "wb") as out:
                    out.write(os.pread(fd, os.fstat(fd).st_size, 0))
            if slot.uid is not None:
                for name in [".", *files]:
                    os.chown(os.path.join(workdir, name), slot.uid, slot.uid)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        env = self.runtime.env(workdir, pythonpath=self._pythonpath)
        installer = self._seccomp
        return Launch(
            argv=[self.runtime.python, "-s", "main.py"],
            env=env,
            cwd=workdir,
            preexec_extra=installer.install if installer is not None else None,
            cleanup=lambda: shutil.rmtree(workdir, ignore_errors=True),
            always_sweep=True,
        )

    def _decode(self, wait_status: int) -> tuple[int | None, int | None]:
        if os.WIFSIGNALED(wait_status):
            return None, os.WTERMSIG(wait_status)
        return os.WEXITSTATUS(wait_status), None
