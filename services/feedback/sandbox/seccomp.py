"""A classic-BPF seccomp filter, built here without any library.

It denies (EPERM) the kernel surface a test program never needs and a breakout would:
ptrace, namespaces (unshare, setns, clone with CLONE_NEW*), mounts, bpf, io_uring,
keyrings, kexec, modules, perf, userfaultfd, cross-process memory access, and netlink /
packet sockets. ``clone3`` answers ENOSYS so that libc falls back to ``clone``, whose flags
the filter can inspect. x86-64 only; other architectures get no filter (reported).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

DENIED_X86_64 = {
    "ptrace": 101,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "init_module": 175,
    "delete_module": 176,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
SYS_CLONE = 56
SYS_CLONE3 = 435
SYS_SOCKET = 41
AF_NETLINK = 16
AF_PACKET = 17
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (CLONE_NEWTIME shares clone()'s
# exit-signal byte and is only reachable through clone3/unshare, both denied).
CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# struct seccomp_data: nr @0, arch @4, ip @8, args @16 (8 bytes each, low word first)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def supported() -> bool:
    return platform.machine() == "x86_64"


def build_filter() -> bytes:
    """The filter program as the raw ``struct sock_filter`` array bwrap's --seccomp reads."""
    if not supported():
        raise RuntimeError(f"the seccomp filter is written for x86-64, not {platform.machine()}")
    deny = _RET_ERRNO | errno.EPERM
    enosys = _RET_ERRNO | errno.ENOSYS
    denied = sorted(DENIED_X86_64.values())
    prog: list[bytes] = []
    # Wrong architecture or the x32 ABI: deny everything.
    prog.append(_insn(_LD_W_ABS, 0, 0, _OFF_ARCH))
    prog.append(_insn(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64))
    prog.append(_insn(_RET_K, 0, 0, deny))
    prog.append(_insn(_LD_W_ABS, 0, 0, _OFF_NR))
    prog.append(_insn(_JGE_K, 0, 1, X32_SYSCALL_BIT))
    prog.append(_insn(_RET_K, 0, 0, deny))
    for nr in denied:
        prog.append(_insn(_JEQ_K, 0, 1, nr))
        prog.append(_insn(_RET_K, 0, 0, deny))
    prog.append(_insn(_JEQ_K, 0, 1, SYS_CLONE3))
    prog.append(_insn(_RET_K, 0, 0, enosys))
    # clone(flags, ...): deny new namespaces.
    prog.append(_insn(_JEQ_K, 0, 3, SYS_CLONE))
    prog.append(_insn(_LD_W_ABS, 0, 0, _OFF_ARG0))
    prog.append(_insn(_JSET_K, 0, 1, CLONE_NEW_MASK))
    prog.append(_insn(_RET_K, 0, 0, deny))
    # socket(domain, ...): no netlink or packet sockets. (A is nr or arg0 here; reload.)
    prog.append(_insn(_LD_W_ABS, 0, 0, _OFF_NR))
    prog.append(_insn(_JEQ_K, 0, 4, SYS_SOCKET))
    prog.append(_insn(_LD_W_ABS, 0, 0, _OFF_ARG0))
    prog.append(_insn(_JEQ_K, 1, 0, AF_NETLINK))
    prog.append(_insn(_JEQ_K, 0, 1, AF_PACKET))
    prog.append(_insn(_RET_K, 0, 0, deny))
    prog.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def describe() -> str:
    if not supported():
        return f"off (filter is x86-64 only; this is {platform.machine()})"
    return (
        "deny "
        + ", ".join(sorted(DENIED_X86_64))
        + ", clone(CLONE_NEW*), clone3 (ENOSYS), netlink/packet sockets"
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Installer:
    """Installs the filter on the calling process (used by the process backend in the
    child between fork and exec). Everything is allocated up front so the child only
    makes two prctl calls."""

    PR_SET_NO_NEW_PRIVS = 38
    PR_SET_SECCOMP = 22
    SECCOMP_MODE_FILTER = 2

    def __init__(self) -> None:
        self._code = build_filter()
        self._buf = ctypes.create_string_buffer(self._code, len(self._code))
        self._prog = _SockFprog(len(self._code) // 8, ctypes.addressof(self._buf))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = self._libc.prctl

    def install(self) -> None:
        if self._prctl(self.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if self._prctl(self.PR_SET_SECCOMP, self.SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
