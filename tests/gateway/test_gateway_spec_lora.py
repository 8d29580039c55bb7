"""A LoRA job needs a rollout engine that loads adapters, and a teacher engine that takes
full weights: mismatched specs are refused at submission, naming the field."""

from __future__ import annotations

from distil.gateway.spec import validate_spec
from distil.gateway.stages import teacher_config
from tests.gateway.spec_errors import errors_of

LORA = {"training": {"lora": {"r": 64, "alpha": 128}}, "engine": {"lora": {"max_rank": 64}}}


def test_lora_training_and_a_lora_engine_go_together():
    _, typed = validate_spec(LORA)
    assert typed.training.lora.r == 64 and typed.engine.lora.max_rank == 64
    assert "set engine.lora" in errors_of({"training": LORA["training"]})["engine.lora"]
    assert "full fine-tuning" in errors_of({"engine": LORA["engine"]})["engine.lora"]
    small = {**LORA, "engine": {"lora": {"max_rank": 32}}}
    assert "below training.lora.r (64)" in errors_of(small)["engine.lora.max_rank"]


def test_the_ema_teacher_engine_takes_full_weights():
    doc = {**LORA, "teacher": {"kind": "self_ema", "engine": {"model": "m", "lora": {}}}}
    assert "merged full weights" in errors_of(doc)["teacher.engine.lora"]
    # a self-teacher that inherits the rollout engine's settings inherits them without LoRA
    _, typed = validate_spec(LORA)
    engine = typed.engine.model_copy(update={"model": "m"}).model_dump(mode="json")
    assert engine["lora"] is not None
    assert teacher_config(typed, engine)["engine"]["lora"] is None
