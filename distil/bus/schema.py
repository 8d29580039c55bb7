"""Python view of the wire schema (``proto/distil/v1``): dataclasses with numpy arrays.

Build a :class:`Group` with numpy arrays, :func:`encode_group` it to bytes, and
:func:`decode_group` bytes back. Arrays travel packed (raw little-endian bytes + dtype +
shape) and decode with ``np.frombuffer`` — no Python loops over tokens. Decoded arrays
are read-only views of the payload; ``.copy()`` one before changing it in place.

Everything that is decoded is validated: a wrong ``schema_version``, bytes that do not
parse, missing ids or arrays whose shapes disagree raise :class:`SchemaError` naming
the offending field.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from google.protobuf.message import DecodeError

from distil.bus._pb import events_pb2, group_pb2
from distil.bus.errors import SchemaError

SCHEMA_VERSION = 1
"""Version written into every message; readers reject any other."""

FinishReasonName = Literal["stop", "length", "abort", "unspecified"]
TestStatusName = Literal["passed", "failed", "error", "timeout", "skipped", "unspecified"]

_DTYPE_TO_PB: dict[np.dtype, int] = {
    np.dtype("<i4"): group_pb2.DTYPE_INT32,
    np.dtype("<i8"): group_pb2.DTYPE_INT64,
    np.dtype("<f2"): group_pb2.DTYPE_FLOAT16,
    np.dtype("<f4"): group_pb2.DTYPE_FLOAT32,
    np.dtype("<f8"): group_pb2.DTYPE_FLOAT64,
    np.dtype("u1"): group_pb2.DTYPE_UINT8,
    np.dtype("?"): group_pb2.DTYPE_BOOL,
    np.dtype("<i2"): group_pb2.DTYPE_INT16,
    np.dtype("i1"): group_pb2.DTYPE_INT8,
}
_PB_TO_DTYPE = {v: k for k, v in _DTYPE_TO_PB.items()}
_FINISH = {
    "unspecified": group_pb2.FINISH_REASON_UNSPECIFIED,
    "stop": group_pb2.FINISH_REASON_STOP,
    "length": group_pb2.FINISH_REASON_LENGTH,
    "abort": group_pb2.FINISH_REASON_ABORT,
}
_FINISH_NAME = {v: k for k, v in _FINISH.items()}
_STATUS = {
    "unspecified": group_pb2.TEST_STATUS_UNSPECIFIED,
    "passed": group_pb2.TEST_STATUS_PASSED,
    "failed": group_pb2.TEST_STATUS_FAILED,
    "error": group_pb2.TEST_STATUS_ERROR,
    "timeout": group_pb2.TEST_STATUS_TIMEOUT,
    "skipped": group_pb2.TEST_STATUS_SKIPPED,
}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}


def _empty_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int32)


# ---------------------------------------------------------------------------- dataclasses


@dataclass(slots=True)
class TestResult:
    __test__ = False  # not a pytest test class

    name: str = ""
    status: TestStatusName = "unspecified"
    fraction: float = 0.0
    message: str = ""


@dataclass(slots=True)
class Feedback:
    """Written by the feedback stage for one response."""

    reward: float = 0.0
    success: bool = False
    tests: list[TestResult] = field(default_factory=list)
    feedback_text: str = ""
    solution_text: str = ""


@dataclass(slots=True)
class TeacherScores:
    """Written by the teacher stage: top-K ids and log-probs at every response position."""

    top_ids: np.ndarray  # [T, K] int32
    top_logprobs: np.ndarray  # [T, K] float32 (or float16)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1]) if self.top_ids.ndim == 2 else 0


@dataclass(slots=True)
class Response:
    """One sampled response (rollout stage), later annotated with feedback and teacher scores."""

    token_ids: np.ndarray  # [T] int32
    logprobs: np.ndarray  # [T] float32, sampled-token log-probs under the rollout policy
    finish_reason: FinishReasonName = "stop"
    truncated: bool = False
    text: str = ""
    feedback: Feedback | None = None
    teacher: TeacherScores | None = None


@dataclass(slots=True)
class StageSpan:
    """When a stage worked on a group (unix seconds); see ``timed``."""

    stage: str
    start: float
    end: float


@dataclass(slots=True)
class Group:
    """One prompt and its G responses: the unit of work on every stream."""

    job_id: str
    group_id: str
    prompt_text: str = ""
    prompt_token_ids: np.ndarray = field(default_factory=_empty_ids)
    responses: list[Response] = field(default_factory=list)
    policy_version: int = 0
    created_at: float = field(default_factory=time.time)
    attempt: int = 1
    task_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    spans: list[StageSpan] = field(default_factory=list)
    # Temperature of the distribution the responses' log-probs are from: the sampling
    # temperature (greedy sampling reports log-probs at 1).
    sampling_temperature: float = 1.0


@dataclass(slots=True, kw_only=True)
class _Event:
    job_id: str
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)


@dataclass(slots=True, kw_only=True)
class StepDone(_Event):
    step: int
    policy_version: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class WeightsUpdated(_Event):
    policy_version: int
    step: int
    uri: str = ""


@dataclass(slots=True, kw_only=True)
class CheckpointWritten(_Event):
    step: int
    policy_version: int
    path: str


@dataclass(slots=True, kw_only=True)
class JobFinished(_Event):
    step: int
    final_checkpoint: str = ""


@dataclass(slots=True, kw_only=True)
class JobFailed(_Event):
    step: int
    error: str


LearnerEvent = StepDone | WeightsUpdated | CheckpointWritten | JobFinished | JobFailed
_EVENT_FIELD: dict[type, str] = {
    StepDone: "step_done",
    WeightsUpdated: "weights_updated",
    CheckpointWritten: "checkpoint_written",
    JobFinished: "job_finished",
    JobFailed: "job_failed",
}
_EVENT_TYPE = {v: k for k, v in _EVENT_FIELD.items()}


# ---------------------------------------------------------------------------- arrays


def _pack(arr: np.ndarray, out: group_pb2.Tensor, where: str, with_data: bool = True) -> np.ndarray:
    """Fill ``out`` (dtype, shape and, if ``with_data``, the bytes); return the contiguous array."""
    a = np.asarray(arr)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt not in _DTYPE_TO_PB:
        raise SchemaError(
            f"{where}: dtype {a.dtype} cannot go on the wire; use one of "
            f"{sorted(str(d) for d in _DTYPE_TO_PB)} (e.g. int32 token ids, float32 log-probs)"
        )
    a = np.ascontiguousarray(a, dtype=dt)
    out.dtype = _DTYPE_TO_PB[dt]
    out.shape.extend(a.shape)
    if with_data:
        out.data = a.tobytes()
    return a


def _unpack(t: group_pb2.Tensor, where: str) -> np.ndarray:
    dt = _PB_TO_DTYPE.get(t.dtype)
    if dt is None:
        raise SchemaError(f"{where}: unknown or missing dtype {t.dtype}")
    shape = tuple(t.shape)
    if shape and min(shape) < 0:
        raise SchemaError(f"{where}: negative shape {list(shape)}")
    data = t.data
    expected = math.prod(shape) * dt.itemsize
    if len(data) != expected:
        raise SchemaError(
            f"{where}: {len(data)} bytes of data but shape {list(shape)} of {dt} needs {expected}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape)


# ---------------------------------------------------------------------------- validation


def _check_int(a: np.ndarray, where: str, ndim: int) -> None:
    if a.ndim != ndim or a.dtype.kind not in "iu":
        raise SchemaError(f"{where}: expected a {ndim}-d integer array, got {a.ndim}-d {a.dtype}")


def _check_float(a: np.ndarray, where: str, ndim: int) -> None:
    if a.ndim != ndim or a.dtype.kind != "f":
        raise SchemaError(f"{where}: expected a {ndim}-d float array, got {a.ndim}-d {a.dtype}")


def validate_group(g: Group) -> None:
    """Raise SchemaError naming the first field that breaks the schema's invariants."""
    if not g.job_id:
        raise SchemaError("group: job_id is missing")
    if not g.group_id:
        raise SchemaError(f"group (job {g.job_id!r}): group_id is missing; it is the idempotency key")
    if not (math.isfinite(g.sampling_temperature) and g.sampling_temperature > 0):
        raise SchemaError(
            f"group {g.group_id!r}: sampling_temperature {g.sampling_temperature!r} must be a finite number > 0 "
            "(the temperature of the responses' log-probs; 1 for greedy sampling)"
        )
    _check_int(np.asarray(g.prompt_token_ids), "prompt_token_ids", 1)
    for i, r in enumerate(g.responses):
        where = f"group {g.group_id!r} responses[{i}]"
        _check_int(r.token_ids, f"{where}.token_ids", 1)
        _check_float(r.logprobs, f"{where}.logprobs", 1)
        t = r.token_ids.shape[0]
        if r.logprobs.shape[0] != t:
            raise SchemaError(f"{where}: {t} token ids but {r.logprobs.shape[0]} log-probs")
        if r.finish_reason not in _FINISH:
            raise SchemaError(f"{where}.finish_reason: {r.finish_reason!r} is not one of {list(_FINISH)}")
        if r.feedback is not None:
            for j, tr in enumerate(r.feedback.tests):
                if tr.status not in _STATUS:
                    raise SchemaError(
                        f"{where}.feedback.tests[{j}].status: {tr.status!r} not in {list(_STATUS)}"
                    )
        if r.teacher is not None:
            ids, lps = r.teacher.top_ids, r.teacher.top_logprobs
            _check_int(ids, f"{where}.teacher.top_ids", 2)
            _check_float(lps, f"{where}.teacher.top_logprobs", 2)
            if ids.shape != lps.shape or ids.shape[0] != t:
                raise SchemaError(
                    f"{where}.teacher: top_ids {ids.shape} and top_logprobs {lps.shape} must both be [T={t}, K]"
                )


def _check_version(version: int, what: str) -> None:
    if version != SCHEMA_VERSION:
        found = "missing (0)" if version == 0 else str(version)
        raise SchemaError(
            f"{what}: schema_version {found} is not supported by this reader (expects {SCHEMA_VERSION}); "
            "producer and consumer run different distil versions — upgrade the older one"
        )


# ---------------------------------------------------------------------------- groups


def group_to_proto(g: Group, deferred: list | None = None) -> group_pb2.Group:
    """The protobuf message of ``g``. With ``deferred`` (a list), the teacher arrays' bytes
    are left out of the message and appended to it as ``(response index, ids, logprobs)``
    for :func:`encode_group` to splice in without extra copies."""
    validate_group(g)
    m = group_pb2.Group(
        schema_version=SCHEMA_VERSION,
        job_id=g.job_id,
        group_id=g.group_id,
        policy_version=g.policy_version,
        created_at=g.created_at,
        attempt=g.attempt,
        prompt_text=g.prompt_text,
        task_id=g.task_id,
        sampling_temperature=g.sampling_temperature,
    )
    m.metadata.update(g.metadata)
    for span in g.spans:
        m.spans.add(stage=span.stage, start=span.start, end=span.end)
    _pack(g.prompt_token_ids, m.prompt_token_ids, "prompt_token_ids")
    for i, r in enumerate(g.responses):
        where = f"responses[{i}]"
        pr = m.responses.add(finish_reason=_FINISH[r.finish_reason], truncated=r.truncated, text=r.text)
        _pack(r.token_ids, pr.token_ids, f"{where}.token_ids")
        _pack(r.logprobs, pr.logprobs, f"{where}.logprobs")
        if r.feedback is not None:
            f = r.feedback
            pf = pr.feedback
            pf.reward = f.reward
            pf.success = f.success
            pf.feedback_text = f.feedback_text
            pf.solution_text = f.solution_text
            for tr in f.tests:
                pf.tests.add(
                    name=tr.name, status=_STATUS[tr.status], fraction=tr.fraction, message=tr.message
                )
        if r.teacher is not None:
            pt = pr.teacher
            pt.k = r.teacher.k
            keep = deferred is None
            ids = _pack(r.teacher.top_ids, pt.top_ids, f"{where}.teacher.top_ids", keep)
            lps = _pack(r.teacher.top_logprobs, pt.top_logprobs, f"{where}.teacher.top_logprobs", keep)
            if not keep:
                deferred.append((i, ids, lps))
    return m


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_prefix(field_number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field (wire type 2)."""
    return _varint(field_number << 3 | 2) + _varint(length)


def encode_group(g: Group) -> bytes:
    """Validate ``g`` and serialise it (schema_version is stamped automatically).

    The teacher arrays (the bulk of a scored group: [T, K] ids and log-probs) are spliced
    into the protobuf wire format straight from numpy memory, so they are copied once.
    Protobuf merges repeated occurrences of a sub-message, so a standard parser reads the
    result as if the arrays had been set on the message.
    """
    deferred: list = []
    m = group_to_proto(g, deferred)
    if not deferred:
        return m.SerializeToString()
    spliced = {i: (ids, lps) for i, ids, lps in deferred}
    responses = [r.SerializeToString() for r in m.responses]
    m.ClearField("responses")
    parts: list = [m.SerializeToString()]
    for i, body in enumerate(responses):
        tail: list = []
        if i in spliced:
            # Response.teacher(7) { top_ids(2) { data(3) }, top_logprobs(3) { data(3) } }
            inner = []
            for sub_field, arr in zip((2, 3), spliced[i], strict=True):
                data = memoryview(arr.reshape(-1).view(np.uint8))  # no copy; fine when empty
                head = _len_prefix(3, data.nbytes)
                inner += [_len_prefix(sub_field, len(head) + data.nbytes), head, data]
            inner_len = sum(len(x) if isinstance(x, bytes) else x.nbytes for x in inner)
            tail = [_len_prefix(7, inner_len), *inner]
        tail_len = sum(len(x) if isinstance(x, bytes) else x.nbytes for x in tail)
        parts += [_len_prefix(9, len(body) + tail_len), body, *tail]
    return b"".join(parts)


def group_from_proto(m: group_pb2.Group) -> Group:
    _check_version(m.schema_version, "group")
    responses = []
    for i, pr in enumerate(m.responses):
        where = f"responses[{i}]"
        if not pr.HasField("token_ids") or not pr.HasField("logprobs"):
            raise SchemaError(f"group {m.group_id!r} {where}: token_ids and logprobs are required")
        feedback = None
        if pr.HasField("feedback"):
            pf = pr.feedback
            feedback = Feedback(
                reward=pf.reward,
                success=pf.success,
                tests=[
                    TestResult(t.name, _STATUS_NAME.get(t.status, "unspecified"), t.fraction, t.message)
                    for t in pf.tests
                ],
                feedback_text=pf.feedback_text,
                solution_text=pf.solution_text,
            )
        teacher = None
        if pr.HasField("teacher"):
            pt = pr.teacher
            teacher = TeacherScores(
                top_ids=_unpack(pt.top_ids, f"{where}.teacher.top_ids"),
                top_logprobs=_unpack(pt.top_logprobs, f"{where}.teacher.top_logprobs"),
            )
            if teacher.k != pt.k:
                raise SchemaError(
                    f"group {m.group_id!r} {where}.teacher: k={pt.k} but top_ids has K={teacher.k}"
                )
        responses.append(
            Response(
                token_ids=_unpack(pr.token_ids, f"{where}.token_ids"),
                logprobs=_unpack(pr.logprobs, f"{where}.logprobs"),
                finish_reason=_FINISH_NAME.get(pr.finish_reason, "unspecified"),
                truncated=pr.truncated,
                text=pr.text,
                feedback=feedback,
                teacher=teacher,
            )
        )
    g = Group(
        job_id=m.job_id,
        group_id=m.group_id,
        prompt_text=m.prompt_text,
        prompt_token_ids=(
            _unpack(m.prompt_token_ids, "prompt_token_ids")
            if m.HasField("prompt_token_ids")
            else _empty_ids()
        ),
        responses=responses,
        policy_version=m.policy_version,
        created_at=m.created_at,
        attempt=m.attempt,
        task_id=m.task_id,
        metadata=dict(m.metadata),
        spans=[StageSpan(s.stage, s.start, s.end) for s in m.spans],
        # 0 on the wire: a producer that did not record it (log-probs at 1)
        sampling_temperature=m.sampling_temperature or 1.0,
    )
    validate_group(g)
    return g


def _parse(cls, data: bytes, what: str):
    m = cls()
    try:
        m.ParseFromString(data)
    except DecodeError as exc:
        raise SchemaError(
            f"{what}: {len(data)} bytes do not parse as distil.v1.{cls.__name__} ({exc}); "
            "the payload is truncated or not a distil message"
        ) from exc
    return m


def decode_group(data: bytes) -> Group:
    """Parse and validate a group; raises SchemaError with the reason on bad input."""
    return group_from_proto(_parse(group_pb2.Group, data, "group"))


# ---------------------------------------------------------------------------- events


def encode_event(ev: LearnerEvent) -> bytes:
    """Serialise a learner event (StepDone, WeightsUpdated, CheckpointWritten, JobFinished, JobFailed)."""
    name = _EVENT_FIELD.get(type(ev))
    if name is None:
        raise SchemaError(f"{type(ev).__name__} is not a learner event; expected one of {list(_EVENT_TYPE)}")
    if not ev.job_id or not ev.event_id:
        raise SchemaError(f"{type(ev).__name__}: job_id and event_id are required")
    m = events_pb2.LearnerEvent(
        schema_version=SCHEMA_VERSION, job_id=ev.job_id, event_id=ev.event_id, created_at=ev.created_at
    )
    body = getattr(m, name)
    body.SetInParent()
    for f in ev.__dataclass_fields__:
        if f in ("job_id", "event_id", "created_at"):
            continue
        value = getattr(ev, f)
        if f == "metrics":
            body.metrics.update({k: float(v) for k, v in value.items()})
        else:
            setattr(body, f, value)
    return m.SerializeToString()


def decode_event(data: bytes) -> LearnerEvent:
    m = _parse(events_pb2.LearnerEvent, data, "learner event")
    _check_version(m.schema_version, "learner event")
    name = m.WhichOneof("kind")
    if name is None:
        raise SchemaError(
            f"learner event {m.event_id!r}: no event kind set; expected one of {list(_EVENT_TYPE)}"
        )
    if not m.job_id or not m.event_id:
        raise SchemaError(f"learner event {name}: job_id and event_id are required")
    cls = _EVENT_TYPE[name]
    body = getattr(m, name)
    kwargs = {}
    for f in cls.__dataclass_fields__:
        if f in ("job_id", "event_id", "created_at"):
            continue
        value = getattr(body, f)
        kwargs[f] = dict(value) if f == "metrics" else value
    return cls(job_id=m.job_id, event_id=m.event_id, created_at=m.created_at, **kwargs)
