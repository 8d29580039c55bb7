"""Wire schema: round trips, numpy dtypes and shapes, validation, versioning, codegen."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

from distil.bus import (
    SCHEMA_VERSION,
    CheckpointWritten,
    Group,
    JobFailed,
    JobFinished,
    Response,
    SchemaError,
    StepDone,
    TeacherScores,
    WeightsUpdated,
    decode_event,
    decode_group,
    encode_event,
    encode_group,
    is_stale,
    max_groups_in_flight,
    protogen,
)
from distil.bus._pb import group_pb2
from distil.bus.schema import _pack, _unpack, group_to_proto
from tests.bus.bus_helpers import make_group


def assert_groups_equal(a: Group, b: Group) -> None:
    assert (a.job_id, a.group_id, a.policy_version, a.attempt, a.prompt_text, a.task_id) == (
        b.job_id, b.group_id, b.policy_version, b.attempt, b.prompt_text, b.task_id,
    )  # fmt: skip
    assert a.created_at == b.created_at and a.metadata == b.metadata
    assert a.sampling_temperature == b.sampling_temperature
    np.testing.assert_array_equal(a.prompt_token_ids, b.prompt_token_ids)
    assert len(a.responses) == len(b.responses)
    for ra, rb in zip(a.responses, b.responses, strict=True):
        assert (ra.finish_reason, ra.truncated, ra.text) == (rb.finish_reason, rb.truncated, rb.text)
        for x, y in ((ra.token_ids, rb.token_ids), (ra.logprobs, rb.logprobs)):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        assert (ra.feedback is None) == (rb.feedback is None)
        if ra.feedback is not None:
            fa, fb = ra.feedback, rb.feedback
            assert (fa.reward, fa.success, fa.tests, fa.feedback_text, fa.solution_text) == (
                fb.reward, fb.success, fb.tests, fb.feedback_text, fb.solution_text,
            )  # fmt: skip
        assert (ra.teacher is None) == (rb.teacher is None)
        if ra.teacher is not None:
            assert ra.teacher.k == rb.teacher.k
            np.testing.assert_array_equal(ra.teacher.top_ids, rb.teacher.top_ids)
            np.testing.assert_array_equal(ra.teacher.top_logprobs, rb.teacher.top_logprobs)
            assert rb.teacher.top_logprobs.dtype == ra.teacher.top_logprobs.dtype


@pytest.mark.parametrize("stage", ["prompt", "rollout", "feedback", "scored"])
def test_group_round_trip_at_every_stage(stage: str) -> None:
    g = {
        "prompt": lambda: make_group("j", "g0", g=0),
        "rollout": lambda: make_group("j", "g0", g=4, t=33),
        "feedback": lambda: make_group("j", "g0", g=4, t=33, feedback=True),
        "scored": lambda: make_group("j", "g0", g=4, t=33, k=20, feedback=True),
    }[stage]()
    back = decode_group(encode_group(g))
    assert_groups_equal(g, back)


def test_sampling_temperature_round_trips_and_is_checked() -> None:
    g = make_group("j", "g0", g=2, t=5)
    g.sampling_temperature = 0.7
    assert decode_group(encode_group(g)).sampling_temperature == 0.7
    m = group_to_proto(g)
    m.ClearField("sampling_temperature")  # a producer that did not record it: log-probs at 1
    assert decode_group(m.SerializeToString()).sampling_temperature == 1.0
    for bad in (0.0, -1.0, float("nan")):
        g.sampling_temperature = bad
        with pytest.raises(SchemaError, match="sampling_temperature"):
            encode_group(g)


@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.int16, np.int8, np.uint8, np.float16, np.float32, np.float64, np.bool_]
)
def test_tensor_dtypes_survive(dtype) -> None:
    g = make_group("j", "g", g=1, t=5, k=3, feedback=True)
    r = g.responses[0]
    if np.dtype(dtype).kind in "iu":
        r.token_ids = np.array([0, 1, 2, 3, 127], dtype=dtype)
        r.teacher.top_ids = np.arange(15, dtype=dtype).reshape(5, 3)
    elif np.dtype(dtype).kind == "f":
        r.logprobs = np.array([-0.5, -1.0, -2.5, 0.0, -np.inf], dtype=dtype)
        r.teacher.top_logprobs = -np.arange(15, dtype=dtype).reshape(5, 3)
    else:  # no Group field holds bools: the tensor codec alone
        arr = np.array([True, False, True, True, False])
        t = group_pb2.Tensor()
        _pack(arr, t, "bools")
        back_arr = _unpack(t, "bools")
        assert back_arr.dtype == arr.dtype
        np.testing.assert_array_equal(back_arr, arr)
        return
    back = decode_group(encode_group(g))
    assert_groups_equal(g, back)


def test_big_endian_and_non_contiguous_arrays_are_normalised() -> None:
    g = make_group("j", "g", g=1, t=6, k=4)
    r = g.responses[0]
    r.token_ids = np.arange(6, dtype=">i4")
    wide = -np.arange(48, dtype=np.float32).reshape(6, 8)
    r.teacher.top_logprobs = wide[:, ::2]  # a strided view
    back = decode_group(encode_group(g)).responses[0]
    np.testing.assert_array_equal(back.token_ids, np.arange(6))
    np.testing.assert_array_equal(back.teacher.top_logprobs, wide[:, ::2])
    assert back.teacher.top_logprobs.shape == (6, 4)


def test_decoded_arrays_are_views_not_python_lists() -> None:
    g = make_group("j", "g", g=2, t=1000, k=8)
    back = decode_group(encode_group(g))
    ids = back.responses[1].teacher.top_ids
    assert isinstance(ids, np.ndarray) and ids.shape == (1000, 8) and ids.dtype == np.int32
    assert not ids.flags.writeable  # a view of the payload, no per-element copy


def test_wrong_schema_version_is_a_clear_error() -> None:
    m = group_pb2.Group()
    m.ParseFromString(encode_group(make_group("j", "g")))
    m.schema_version = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match=r"schema_version 2 is not supported .*expects 1"):
        decode_group(m.SerializeToString())
    m.schema_version = 0
    with pytest.raises(SchemaError, match="schema_version missing"):
        decode_group(m.SerializeToString())


def test_truncated_bytes_are_a_clear_error() -> None:
    data = encode_group(make_group("j", "g", t=64, k=4))
    with pytest.raises(SchemaError, match="truncated or not a distil message"):
        decode_group(data[: len(data) // 2])
    with pytest.raises(SchemaError):
        decode_group(b"\xff\xff\xff garbage")


def test_missing_fields_are_named() -> None:
    with pytest.raises(SchemaError, match="group_id is missing"):
        encode_group(make_group("j", ""))
    m = group_pb2.Group()
    m.ParseFromString(encode_group(make_group("j", "g")))
    m.ClearField("group_id")
    with pytest.raises(SchemaError, match="group_id is missing"):
        decode_group(m.SerializeToString())
    m.group_id = "g"
    m.responses[0].ClearField("logprobs")
    with pytest.raises(SchemaError, match=r"responses\[0\]: token_ids and logprobs are required"):
        decode_group(m.SerializeToString())


def test_inconsistent_shapes_are_rejected_both_ways() -> None:
    g = make_group("j", "g", g=1, t=8, k=4)
    g.responses[0].logprobs = g.responses[0].logprobs[:5]
    with pytest.raises(SchemaError, match="8 token ids but 5 log-probs"):
        encode_group(g)
    g = make_group("j", "g", g=1, t=8, k=4)
    g.responses[0].teacher = TeacherScores(np.zeros((7, 4), np.int32), np.zeros((7, 4), np.float32))
    with pytest.raises(SchemaError, match=r"must both be \[T=8, K\]"):
        encode_group(g)
    # A payload whose bytes disagree with its declared shape.
    m = group_pb2.Group()
    m.ParseFromString(encode_group(make_group("j", "g", g=1, t=8)))
    m.responses[0].token_ids.shape[0] = 9
    with pytest.raises(SchemaError, match=r"responses\[0\].token_ids: 32 bytes of data but shape \[9\]"):
        decode_group(m.SerializeToString())


def test_unsupported_dtype_says_what_to_use() -> None:
    g = Group(job_id="j", group_id="g", prompt_token_ids=np.array(["a"]))
    with pytest.raises(SchemaError, match="integer array"):
        encode_group(g)
    r = Response(token_ids=np.zeros(2, np.uint64), logprobs=np.zeros(2, np.float32))
    with pytest.raises(SchemaError, match="cannot go on the wire"):
        encode_group(Group(job_id="j", group_id="g", responses=[r]))


@pytest.mark.parametrize(
    "event",
    [
        StepDone(job_id="j", step=3, policy_version=4, metrics={"loss": 0.5, "kl": 1e-3}),
        WeightsUpdated(job_id="j", policy_version=4, step=3, uri="file:///w/4"),
        CheckpointWritten(job_id="j", step=10, policy_version=10, path="/ckpt/10"),
        JobFinished(job_id="j", step=100, final_checkpoint="/ckpt/100"),
        JobFailed(job_id="j", step=7, error="CUDA OOM; lower the batch size"),
    ],
)
def test_event_round_trip(event) -> None:
    back = decode_event(encode_event(event))
    assert back == event and type(back) is type(event)


def test_event_with_wrong_version_or_no_kind_is_rejected() -> None:
    from distil.bus._pb import events_pb2

    m = events_pb2.LearnerEvent(schema_version=SCHEMA_VERSION, job_id="j", event_id="e")
    with pytest.raises(SchemaError, match="no event kind"):
        decode_event(m.SerializeToString())
    m.schema_version = 99
    m.job_failed.error = "x"
    with pytest.raises(SchemaError, match="schema_version 99"):
        decode_event(m.SerializeToString())


def test_staleness_filter() -> None:
    assert not is_stale(5, 5, 0)
    assert is_stale(4, 5, 0)
    assert not is_stale(3, 5, 2)
    assert is_stale(2, 5, 2)
    with pytest.raises(ValueError, match="versions only increase"):
        is_stale(6, 5, 1)
    assert max_groups_in_flight(max_staleness=1, groups_per_step=16) == 32


def test_generated_code_is_current(tmp_path: Path) -> None:
    """Fails when proto/ changed without `make proto` (CI runs this test)."""
    written = protogen.generate(tmp_path)
    names = sorted(p.name for p in written)
    committed = sorted(p.name for p in protogen.PB_DIR.iterdir() if p.is_file())
    assert names == committed, (
        f"distil/bus/_pb differs from proto/: run `make proto` ({names} vs {committed})"
    )
    match, mismatch, errors = filecmp.cmpfiles(tmp_path, protogen.PB_DIR, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code {mismatch + errors}: run `make proto` and commit"
    )


def test_spliced_encoding_is_plain_protobuf_to_any_reader() -> None:
    """encode_group splices teacher arrays in; a stock parser must see the same message."""
    g = make_group("j", "g", g=3, t=40, k=7, feedback=True)
    parsed = group_pb2.Group.FromString(encode_group(g))
    assert parsed == group_to_proto(g)


def test_empty_responses_and_zero_length_arrays_round_trip() -> None:
    empty = Response(
        token_ids=np.zeros(0, np.int32),
        logprobs=np.zeros(0, np.float32),
        teacher=TeacherScores(np.zeros((0, 5), np.int32), np.zeros((0, 5), np.float32)),
    )
    g = Group(job_id="j", group_id="g", responses=[empty, make_group("j", "x", g=1, k=5).responses[0]])
    back = decode_group(encode_group(g))
    assert back.responses[0].teacher.top_ids.shape == (0, 5) and back.responses[0].teacher.k == 5
    assert_groups_equal(g, back)


def test_feedback_teacher_mask_is_gone_and_its_field_number_reserved() -> None:
    """Feedback.teacher_mask (field 6) was never written or read; the learner's teacher mask is
    whether Response.teacher is set (#22 item 10). Its number and name stay reserved."""
    from distil.bus import Feedback

    assert "teacher_mask" not in Feedback.__slots__
    fields = group_pb2.Feedback.DESCRIPTOR.fields_by_name
    assert "teacher_mask" not in fields and 6 not in {f.number for f in fields.values()}
    proto = (Path(protogen.SCHEMA_DIR) / "group.proto").read_text()
    assert "reserved 6;" in proto and 'reserved "teacher_mask";' in proto
    # A message written by an older producer with field 6 set still decodes (unknown field).
    g = make_group("j", "g", g=1, t=3, k=2, feedback=True)
    m = group_to_proto(g)
    old = group_pb2.Tensor(dtype=group_pb2.DTYPE_BOOL, shape=[3], data=b"\x01\x00\x01")
    tag = bytes([(6 << 3) | 2]) + bytes([len(old.SerializeToString())]) + old.SerializeToString()
    feedback = m.responses[0].feedback.SerializeToString() + tag
    m.responses[0].feedback.ParseFromString(feedback)
    assert decode_group(m.SerializeToString()).responses[0].feedback.reward == g.responses[0].feedback.reward
