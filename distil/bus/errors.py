"""Errors raised by the bus. Each message says what was wrong and what to do."""

from __future__ import annotations


class BusError(Exception):
    """Base class of every bus error."""


class SchemaError(BusError, ValueError):
    """A payload does not match the wire schema (bad version, truncated, missing fields)."""


class BusUnavailable(BusError, ConnectionError):
    """Redis stayed unreachable for longer than ``BusConfig.reconnect_timeout_s``."""


class BackpressureTimeout(BusError, TimeoutError):
    """A producer waited longer than ``BusConfig.backpressure_timeout_s`` for room downstream."""
