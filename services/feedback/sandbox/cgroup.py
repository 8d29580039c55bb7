"""Detect what the host's cgroups allow. A v2 (unified) hierarchy whose controllers we may
delegate is needed for per-run memory and pids limits; a v1-only host is reported as such
and runs rely on RLIMIT_AS / RLIMIT_NPROC instead."""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def detect(root: Path = ROOT) -> str:
    """A one-line description of cgroup support, starting with the verdict."""
    controllers = root / "cgroup.controllers"
    if controllers.is_file():
        have = controllers.read_text().split()
        missing = [c for c in ("memory", "pids") if c not in have]
        if missing:
            return f"unavailable: cgroup v2 without the {', '.join(missing)} controller(s)"
        return "unavailable: cgroup v2 present, per-run delegation not implemented; rlimits used"
    if (root / "memory").is_dir() or (root / "pids").is_dir():
        return "unavailable: host has cgroup v1 only; memory bounded by RLIMIT_AS, processes by RLIMIT_NPROC"
    return "unavailable: no cgroup filesystem mounted"
