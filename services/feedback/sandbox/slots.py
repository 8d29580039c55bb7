"""Concurrency slots. Each slot owns a uid (when we are root) so that RLIMIT_NPROC, which
the kernel counts per uid and never enforces for root, bounds the processes of exactly one
run, and so that every process a run leaves behind can be found and killed by uid."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import SandboxUnavailable


@dataclass(frozen=True)
class Slot:
    index: int
    uid: int | None  # None: programs run as the service's own uid (not root)


RANGE_ATTEMPTS = 32


def _claim_uid_range(uid_base: int, slots: int) -> tuple[int, socket.socket]:
    """Reserve ``slots`` uids for this process. Two sandboxes sharing uids would count each
    other's processes against RLIMIT_NPROC and kill each other's runs in a sweep, so each
    range is held through an abstract unix socket (released when the process exits, no
    files); a range that is taken, or still owns processes, moves on to the next one."""
    for attempt in range(RANGE_ATTEMPTS):
        base = uid_base + attempt * slots
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0distil-sandbox-uids-{base}-{slots}")
        except OSError:
            lock.close()
            continue
        if _uids_in_use(base, slots):  # processes (or zombies) left by someone else
            lock.close()
            continue
        return base, lock
    raise SandboxUnavailable(
        f"uid ranges from {uid_base} ({RANGE_ATTEMPTS} x {slots}) are all held by other sandboxes; set uid_base"
    )


def _uids_in_use(base: int, slots: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if base <= os.stat(f"/proc/{entry}").st_uid < base + slots:
                    return True
            except OSError:
                continue
    return False


class SlotPool:
    def __init__(self, slots: int, uid_base: int, wait_s: float) -> None:
        self.drop_uid = os.geteuid() == 0
        self._wait_s = wait_s
        self._lock: socket.socket | None = None
        self.uid_base: int | None = None
        if self.drop_uid:
            self.uid_base, self._lock = _claim_uid_range(uid_base, slots)
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        for i in range(slots):
            self._free.put(Slot(i, self.uid_base + i if self.uid_base is not None else None))
        self._kill = shutil.which("kill") or "/bin/kill"

    @contextmanager
    def acquire(self) -> Iterator[Slot]:
        try:
            slot = self._free.get(timeout=self._wait_s)
        except queue.Empty:
            raise SandboxUnavailable(f"no sandbox slot became free within {self._wait_s} s") from None
        try:
            yield slot
        finally:
            self._free.put(slot)

    def close(self) -> None:
        """Give the uid range back (also happens when the process exits)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def sweep(self, slot: Slot) -> None:
        """Kill every process of the slot's uid (a daemon that escaped its process group).

        ``kill -9 -1`` run *as that uid* signals exactly the processes it owns; the
        slot is still held, so no other run uses the uid meanwhile.
        """
        if slot.uid is None:
            return
        subprocess.run(
            [self._kill, "-9", "-1"],
            user=slot.uid,
            group=slot.uid,
            extra_groups=[],
            env={},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
