"""How a message sits in a stream entry: a few small fields around the protobuf payload.

- ``k``: kind, b"group" or b"event";
- ``id``: the message's idempotency key (group id or event id);
- ``n``: payload length in bytes (detects truncation in transit);
- ``d``: the payload (encoded Group or LearnerEvent), when at most ``inline_max_bytes``;
- ``b``: otherwise the key of a Redis string holding the payload, written in the same
  transaction as the entry and deleted in the same transaction as its ack (Redis copies
  large stream entries more than it copies plain strings).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from distil.bus import names
from distil.bus.errors import SchemaError
from distil.bus.schema import Group, LearnerEvent, decode_event, decode_group, encode_event, encode_group

Kind = Literal["group", "event"]
Message = Group | LearnerEvent


def message_id(value: Message) -> str:
    return value.group_id if isinstance(value, Group) else value.event_id


def to_fields(value: Message) -> dict[bytes, bytes]:
    """The entry fields with the payload inline."""
    if isinstance(value, Group):
        kind, payload = b"group", encode_group(value)
    else:
        kind, payload = b"event", encode_event(value)
    return {b"k": kind, b"id": message_id(value).encode(), b"n": str(len(payload)).encode(), b"d": payload}


@dataclass(slots=True)
class Outgoing:
    """An encoded message ready to be appended with :meth:`queue_xadd`."""

    fields: dict[bytes, bytes]  # k, id, n
    payload: bytes
    inline: bool

    def queue_xadd(self, pipe, stream_key: str) -> None:
        """Queue the XADD (and, for a large payload, the SET of its string) on a pipeline.

        The string gets a fresh key on every call, so a retried write never shares a
        string with an entry an earlier attempt may have added.
        """
        fields = dict(self.fields)
        if self.inline:
            fields[b"d"] = self.payload
        else:
            key = names.blob_key(stream_key, uuid.uuid4().hex)
            pipe.set(key, self.payload)
            fields[b"b"] = key.encode()
        pipe.xadd(stream_key, fields)


def prepare(value: Message, inline_max_bytes: int) -> Outgoing:
    fields = to_fields(value)
    payload = fields.pop(b"d")
    return Outgoing(fields, payload, inline=len(payload) <= inline_max_bytes)


def blob_ref(fields: dict[bytes, bytes]) -> str | None:
    raw = fields.get(b"b")
    return raw.decode(errors="replace") if raw else None


def peek_id(fields: dict[bytes, bytes]) -> str | None:
    """The message id if present and readable, without decoding the payload."""
    raw = fields.get(b"id")
    try:
        return raw.decode() if raw else None
    except UnicodeDecodeError:
        return None


def from_fields(fields: dict[bytes, bytes]) -> Message:
    """Decode a stream entry; SchemaError says what is wrong with it."""
    missing = [name for name in ("k", "id", "n", "d") if name.encode() not in fields]
    if missing == ["d"] and b"b" in fields:
        raise SchemaError(f"payload blob {blob_ref(fields)!r} is missing (deleted by hand or lost)")
    if missing:
        raise SchemaError(f"stream entry lacks field(s) {missing}; it was not written by distil.bus")
    kind, payload = fields[b"k"], fields[b"d"]
    try:
        expected = int(fields[b"n"])
    except ValueError as exc:
        raise SchemaError(f"stream entry field 'n' is not a length: {fields[b'n'][:32]!r}") from exc
    if len(payload) != expected:
        raise SchemaError(f"payload truncated: {len(payload)} of {expected} bytes arrived")
    if kind == b"group":
        value: Message = decode_group(payload)
    elif kind == b"event":
        value = decode_event(payload)
    else:
        raise SchemaError(f"unknown message kind {kind[:32]!r}; expected b'group' or b'event'")
    if message_id(value) != peek_id(fields):
        raise SchemaError(
            f"entry id field {peek_id(fields)!r} disagrees with the payload's id {message_id(value)!r}"
        )
    return value
