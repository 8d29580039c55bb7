"""Sandbox errors (each says what to do)."""


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this host."""
