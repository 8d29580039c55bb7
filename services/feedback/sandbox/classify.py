"""Turn a raw run into a status. Shared by every backend."""

from __future__ import annotations

import signal

from .result import ExecResult, Status
from .runner import RawRun

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")


def signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIG{signo}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(raw: RawRun, *, exit_code: int | None, signo: int | None, isolation: str) -> ExecResult:
    """``exit_code``/``signo`` are the *program's* (a backend decodes its wrapper's status)."""
    stdout = raw.stdout.decode("utf-8", errors="replace")
    stderr = raw.stderr.decode("utf-8", errors="replace")
    sig = signal_name(signo) if signo is not None else None
    status: Status
    detail = ""
    if raw.killed == "timeout" or sig == "SIGXCPU":
        status, detail = "timeout", "wall-clock limit" if raw.killed == "timeout" else "CPU-time limit"
    elif raw.killed == "output":
        status, detail = "output_limit", "stdout" if raw.stdout_truncated else "stderr"
    elif sig == "SIGXFSZ":
        status, detail = "output_limit", "file-size limit"
    elif exit_code == 0 and signo is None:
        status = "ok"
    elif "[Errno 27] File too large" in _last_line(stderr):  # Python ignores SIGXFSZ: EFBIG
        status, detail = "output_limit", "file-size limit"
    elif any(m in _last_line(stderr) for m in _MEMORY_MARKERS):
        status, detail = "memory_limit", _last_line(stderr)[:200]
    else:
        status = "runtime_error"
    return ExecResult(
        status=status,
        exit_code=exit_code,
        signal=sig,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=raw.stdout_truncated,
        stderr_truncated=raw.stderr_truncated,
        wall_s=round(raw.wall_s, 4),
        cpu_s=round(raw.cpu_s, 4),
        isolation=isolation,
        detail=detail,
    )
