"""Run untrusted programs: one protocol (`Sandbox`), one file per backend.

``make_sandbox(config)`` picks the strongest backend this host supports and reports it in
every result's ``isolation`` field.
"""

from __future__ import annotations

from .config import SandboxConfig
from .errors import SandboxUnavailable
from .protocol import Sandbox
from .result import ExecResult, Isolation, Status

__all__ = [
    "ExecResult",
    "Isolation",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "Status",
    "make_sandbox",
]


def make_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """The configured backend; with ``backend="auto"``, bubblewrap if a probe run succeeds,
    else the process backend -- or ``SandboxUnavailable`` when ``require_isolation``."""
    from .bwrap import BwrapSandbox
    from .process import ProcessSandbox

    config = config or SandboxConfig()
    if config.backend in ("auto", "bwrap"):
        reason = ""
        try:
            sandbox = BwrapSandbox(config)
            probe = sandbox.probe()
            if probe.ok and probe.stdout.strip() == "ok":
                return sandbox
            reason = f"{probe.status}: {probe.detail or probe.stderr.strip()[:300]}"
            sandbox.close()
        except SandboxUnavailable as exc:
            reason = str(exc)
        if config.backend == "bwrap" or config.require_isolation:
            raise SandboxUnavailable(
                f"bubblewrap isolation is unavailable on this host ({reason}); user namespaces are "
                "probably disabled. Enable them, or set require_isolation=false to accept the "
                "weaker process backend."
            )
    if config.require_isolation:
        raise SandboxUnavailable(
            "require_isolation is set but backend='process' provides no namespace isolation"
        )
    return ProcessSandbox(config)
