"""Launch one child, read its stdout/stderr concurrently with byte caps, enforce a wall
clock measured from exec, and kill its whole process group on timeout or flood."""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# After the main process exits, how long to keep draining pipes that something else
# (a leftover child) still holds open before giving up on them.
DRAIN_GRACE_S = 0.25
READ_CHUNK = 1 << 16
# How long bwrap gets to exit on its own after its sandbox was killed.
KILL_GRACE_S = 1.0


@dataclass
class RawRun:
    wait_status: int
    cpu_s: float
    wall_s: float
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    killed: str | None  # "timeout" | "output" | None


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    address_space_bytes: int
    file_size_bytes: int
    open_files: int
    processes: int | None  # None: not applied (only meaningful for a dedicated uid)

    def apply(self) -> None:
        """Called in the child between fork and exec (after the uid drop)."""
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (self.address_space_bytes, self.address_space_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_bytes, self.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        if self.processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))

    def names(self) -> list[str]:
        names = ["CPU", "AS", "FSIZE", "NOFILE", "CORE=0"]
        return names + (["NPROC"] if self.processes is not None else [])


def memfd_with(data: bytes, name: str) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start (no temp files)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int, depth: int = 0) -> float:
    """CPU seconds used so far by ``pid`` and its descendants (children it reaped
    included), read from /proc; used for runs we kill, which are never reaped normally."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            children = [int(c) for c in f.read().split()]
    except (OSError, ValueError, IndexError):
        return 0.0
    if depth < 8:
        total += sum(tree_cpu_s(c, depth + 1) for c in children[:64])
    return total


def _streams_open(sel: selectors.BaseSelector) -> bool:
    return any(key.data in ("stdout", "stderr") for key in sel.get_map().values())


def _child_pid(info: bytes) -> int | None:
    try:
        return int(json.loads(bytes(info))["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _kill_sandbox(pid: int, pidfd: int, child_pidfd: int | None) -> None:
    """Kill the sandbox's pid 1 first (the kernel then kills its whole pid namespace and
    bwrap exits by itself); the process group of the launched process in any case. The
    pid 1 is addressed through a pidfd taken while it was alive, so a recycled pid is
    never hit."""
    if child_pidfd is not None:
        try:
            signal.pidfd_send_signal(child_pidfd, signal.SIGKILL)
            selectors_wait(pidfd, KILL_GRACE_S)
        except (ProcessLookupError, OSError):
            pass
    _kill_group(pid)


def selectors_wait(fd: int, timeout: float) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        sel.select(timeout)


def launch(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    stdin_fd: int,
    pass_fds: Sequence[int],
    cwd: str | None,
    user: int | None,
    preexec: Callable[[], None],
    timeout_s: float,
    stdout_cap: int,
    stderr_cap: int,
    on_kill: Callable[[], None] = lambda: None,
    info_fd: int | None = None,
    close_after_spawn: list[int] | None = None,
) -> RawRun:
    """Run ``argv`` in a new session; kill it (and its group, and ``on_kill``) on timeout
    or when either stream exceeds its cap. Never raises for anything the child does.

    ``info_fd`` is the read end of bwrap's ``--info-fd`` pipe: it names the sandbox's pid 1
    (in our pid namespace), which is what gets killed, taking the whole pid namespace with
    it; bwrap then reaps it and exits."""
    proc = subprocess.Popen(
        list(argv),
        stdin=stdin_fd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=tuple(pass_fds),
        cwd=cwd,
        env=env,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
        start_new_session=True,
        preexec_fn=preexec,
    )
    # Popen returns once exec has succeeded: the clock starts at exec, not at enqueue.
    started = time.monotonic()
    close_after_spawn = close_after_spawn if close_after_spawn is not None else []
    while close_after_spawn:  # emptied in place: the caller must not close them again
        os.close(close_after_spawn.pop())
    deadline = started + timeout_s
    pidfd = os.pidfd_open(proc.pid)
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    caps = {"stdout": stdout_cap, "stderr": stderr_cap}
    truncated = {"stdout": False, "stderr": False}
    killed: str | None = None
    info = bytearray()
    child_pidfd: int | None = None
    sel = selectors.DefaultSelector()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe.fileno(), selectors.EVENT_READ, name)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        if info_fd is not None:
            os.set_blocking(info_fd, False)
            sel.register(info_fd, selectors.EVENT_READ, "info")
        exited = False
        while not exited or _streams_open(sel):
            now = time.monotonic()
            if now >= deadline:
                if not exited:
                    killed = "timeout"
                break
            for key, _ in sel.select(deadline - now):
                if key.data == "exit":
                    exited = True
                    sel.unregister(pidfd)
                    # Whatever still holds the pipes gets a short grace, not the full timeout.
                    deadline = min(deadline, time.monotonic() + DRAIN_GRACE_S)
                    continue
                try:
                    chunk = os.read(key.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                if key.data == "info":
                    info += chunk[: 4096 - len(info)]
                    if child_pidfd is None and (child := _child_pid(info)) is not None:
                        try:
                            child_pidfd = os.pidfd_open(child)
                        except ProcessLookupError:
                            pass
                    continue
                buf, cap = bufs[key.data], caps[key.data]
                room = cap - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    truncated[key.data] = True
                    killed = killed or "output"
            if killed == "output":
                break
        lingering = _streams_open(sel)  # pipes held open by something that outlived the child
        killed_cpu_s = 0.0
        if killed or not exited or lingering:
            killed_cpu_s = tree_cpu_s(proc.pid)
            _kill_sandbox(proc.pid, pidfd, child_pidfd)
            on_kill()
    except BaseException:  # our own failure mid-run: never leave the child behind
        _kill_sandbox(proc.pid, pidfd, child_pidfd)
        on_kill()
        os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    finally:
        sel.close()
        os.close(pidfd)
        if child_pidfd is not None:
            os.close(child_pidfd)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from reaping twice
    cpu_s = usage.ru_utime + usage.ru_stime
    return RawRun(
        wait_status=status,
        cpu_s=max(cpu_s, killed_cpu_s),
        wall_s=time.monotonic() - started,
        stdout=bytes(bufs["stdout"]),
        stderr=bytes(bufs["stderr"]),
        stdout_truncated=truncated["stdout"],
        stderr_truncated=truncated["stderr"],
        killed=killed,
    )
