"""Redis key names. Every key of a job starts with ``{prefix}:{job}:`` so a job is removable as a whole."""

from __future__ import annotations

import re

STAGES = ("prompts", "rollouts", "feedback", "scored", "events")
"""Streams of a job: driver -> prompts -> rollout -> rollouts -> feedback -> feedback ->
teacher -> scored -> learner -> events -> gateway. Other names are allowed (tests, plugins)."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid bus name: use 1-128 letters, digits, '_', '.' or '-'"
        )
    return value


def stream_key(prefix: str, job: str, stream: str) -> str:
    """``distil:{job}:{stream}``: the stream of one job and stage."""
    return f"{prefix}:{check_name('job id', job)}:{check_name('stream', stream)}"


def dead_letter_key(stream: str) -> str:
    return f"{stream}:dead"


def done_key(stream: str, message_id: str) -> str:
    """Marker that the consumer group of ``stream`` has committed ``message_id`` (a group id)."""
    return f"{stream}:done:{message_id}"


def errors_key(stream: str) -> str:
    """Hash entry id -> last handler error, kept until the entry is committed or dead-lettered."""
    return f"{stream}:errors"


def blob_key(stream: str, unique: str) -> str:
    """A large payload stored next to its stream entry (see envelope.py)."""
    return f"{stream}:blob:{unique}"
