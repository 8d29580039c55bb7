"""Teacher kinds: config parsing and the objective support table (no engines)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from services.teacher.config import BlackBoxTeacherConfig, ExternalTeacherConfig, TeacherConfig
from services.teacher.support import check_teacher_objective, support_table

parse = TypeAdapter(TeacherConfig).validate_python


def test_kinds_parse_by_discriminator():
    assert parse({"kind": "self_ema"}).rate == 0.01
    assert parse({"kind": "self_frozen"}).kind == "self_frozen"
    ext = parse({"kind": "external", "url": "http://h:8000", "top_k": 100})
    assert isinstance(ext, ExternalTeacherConfig) and ext.top_k == 100
    bb = parse({"kind": "black_box", "url": "http://h", "form": "sampled_tokens"})
    assert isinstance(bb, BlackBoxTeacherConfig) and bb.scorer.kind == "self_frozen"
    with pytest.raises(ValidationError, match="kind"):
        parse({"kind": "oracle"})
    with pytest.raises(ValidationError, match="url"):
        parse({"kind": "external"})


def test_temperature_other_than_one_refused_with_reason():
    with pytest.raises(ValidationError, match="temperature must be 1"):
        parse({"kind": "self_ema", "temperature": 0.7})


def test_support_table():
    table = support_table()
    for kind in ("self_ema", "self_frozen", "external", "black_box/corrected_response"):
        assert all(table[kind].values()), kind
    sampled = table["black_box/sampled_tokens"]
    assert sampled == {"distil": True, "ce": True, "sdpo": False, "opsd": False, "grpo": True, "sft": True}


def test_unsupported_combination_rejected_at_submission():
    bb = parse({"kind": "black_box", "url": "http://h", "form": "sampled_tokens"})
    check_teacher_objective(bb, "distil")
    with pytest.raises(ValueError, match="objective 'sdpo' needs the teacher's log-probs"):
        check_teacher_objective(bb, "sdpo")
    with pytest.raises(ValueError, match="unknown objective"):
        check_teacher_objective(parse({"kind": "self_ema"}), "ppo")
