"""Orphans of a run must not become zombies of the host's init (which may never reap
them, and a zombie still counts against its uid's RLIMIT_NPROC). The service makes itself
a child subreaper, so orphans come back to it, and reaps exactly the ones a run left."""

from __future__ import annotations

import ctypes
import os
import selectors
import signal

PR_SET_CHILD_SUBREAPER = 36
_done = False


def become_subreaper() -> bool:
    global _done
    if not _done:
        libc = ctypes.CDLL(None, use_errno=True)
        _done = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _done


def reap(pid: int, timeout_s: float = 2.0) -> float:
    """Reap ``pid`` if it is (now) our child, killing it if it has not exited within
    ``timeout_s``; the CPU seconds it and its reaped children used."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return 0.0
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _, _, usage = os.wait4(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        return 0.0
    finally:
        os.close(pidfd)
    return usage.ru_utime + usage.ru_stime


def reap_orphans_of(uid: int) -> int:
    """Reap our zombie children owned by ``uid`` (orphans re-parented to us). Returns how many."""
    me, count = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[1]) != me or os.stat(f"/proc/{entry}").st_uid != uid:
                continue
        except (OSError, ValueError):
            continue
        reap(int(entry), timeout_s=1.0)
        count += 1
    return count
