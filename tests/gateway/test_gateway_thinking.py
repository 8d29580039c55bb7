"""One thinking switch per job (#22 item 8): the job's ``enable_thinking`` sets the rollout
engine's chat template, the teacher contexts' template and the evaluation prompts alike.
Before, evaluation left it out of ``apply_chat_template`` (a Qwen3 template then thinks) while
rollouts and teacher contexts had their own switches, so a job could train without thinking
and be evaluated with it. Pure config and prompt rendering, no engine."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter
from transformers import AutoTokenizer

from distil.bus import Group
from distil.data import Task
from distil.engine.engine import Engine
from distil.gateway.driver import JobDriver
from distil.gateway.spec import validate_spec
from distil.gateway.stages import teacher_config
from distil.jobs import JobStore, SpecError
from services.rollout.stage import group_prompt
from services.teacher.config import TeacherConfig
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401  (shared session fixtures)

# The packaged tokenizer with a Qwen3-style generation prompt: thinking unless the caller
# passes enable_thinking=False, which pre-fills an empty think block.
THINKING_GEN = (
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


@pytest.fixture(scope="module")
def thinking_model_dir(tiny_model_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("thinking-model")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    head, sep, _ = tok.chat_template.partition("{% if add_generation_prompt %}")
    assert sep, "the packaged template changed; update THINKING_GEN"
    tok.chat_template = head + THINKING_GEN
    tok.save_pretrained(out)
    (out / "chat_template.jinja").write_text(tok.chat_template)
    shutil.copy(tiny_model_dir / "config.json", out / "config.json")
    return out


def test_the_fixture_template_honours_the_switch(thinking_model_dir):
    tok = AutoTokenizer.from_pretrained(thinking_model_dir)
    msgs = [{"role": "user", "content": "hi"}]
    off = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) != off


TEACHERS = [
    {"kind": "self_ema"},
    {"kind": "self_frozen"},
    {"kind": "external", "url": "http://t"},
    {"kind": "black_box", "url": "http://t", "form": "corrected_response"},
    {"kind": "self_ema", "engine": {"model": "/m", "max_model_len": 4096}},
]


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("teacher", TEACHERS, ids=lambda t: t["kind"] + ("+engine" if "engine" in t else ""))
def test_one_job_setting_reaches_rollout_engine_and_teacher_template(thinking, teacher):
    spec, typed = validate_spec({"enable_thinking": thinking, "teacher": teacher})
    assert spec.enable_thinking is thinking
    assert typed.engine.enable_thinking is thinking
    # What the stage builder hands the teacher deployment, as the deployment reads it.
    built = TypeAdapter(TeacherConfig).validate_python(teacher_config(typed, typed.engine.model_dump()))
    assert built.template.enable_thinking is thinking
    self_teacher = built.scorer if built.kind == "black_box" else built
    if self_teacher.kind != "external":
        assert self_teacher.template.enable_thinking is thinking
        assert self_teacher.engine.enable_thinking is thinking


def test_the_default_is_off():
    spec, typed = validate_spec({})
    assert spec.enable_thinking is False and typed.engine.enable_thinking is False
    assert typed.teacher.template.enable_thinking is False


@pytest.mark.parametrize(
    "doc, loc",
    [
        ({"engine": {"enable_thinking": True}}, "engine.enable_thinking"),
        ({"teacher": {"kind": "self_ema", "template": {"enable_thinking": True}}}, "teacher.template.enable_thinking"),
        ({"teacher": {"kind": "self_ema", "engine": {"model": "/m", "enable_thinking": False}}},
         "teacher.engine.enable_thinking"),
        ({"teacher": {"kind": "black_box", "url": "http://t", "scorer": {"template": {"enable_thinking": True}}}},
         "teacher.scorer.template.enable_thinking"),
    ],
)  # fmt: skip
def test_a_second_thinking_switch_is_refused_naming_the_job_setting(doc, loc):
    with pytest.raises(SpecError) as info:
        validate_spec(doc)
    errors = {e["loc"]: e["msg"] for e in info.value.errors}
    assert set(errors) == {loc}, errors
    assert "'enable_thinking'" in errors[loc]


class _Captured(Exception):
    pass


class CapturingStages:
    """Records the prompt ids evaluation sends to the rollout service, then stops the round."""

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []

    def generate(self, job, prompt_ids, **kwargs):
        self.prompts.append(list(prompt_ids))
        raise _Captured


@pytest.mark.parametrize("thinking", [False, True])
def test_evaluation_prompt_ids_equal_the_rollouts(thinking, thinking_model_dir, tmp_path):
    spec, typed = validate_spec({"enable_thinking": thinking})
    task = Task(id="t0", prompt="What is 2 + 3? Answer with a number.", verifier="math", answer="5")

    store = JobStore(tmp_path / "jobs.sqlite3")
    stages = CapturingStages()
    driver = JobDriver(store, stages, None, store.create({"enable_thinking": thinking}), None)
    with pytest.raises(_Captured):
        driver._evaluate(spec, [task], thinking_model_dir, step=1)
    store.close()

    # The rollout stage's prompt for the group the driver feeds (prompt_text = task.prompt),
    # rendered by the engine's own prompt_ids with the engine config the job's stages get.
    engine = SimpleNamespace(
        config=typed.engine.model_copy(update={"model": str(thinking_model_dir)}),
        tokenizer=AutoTokenizer.from_pretrained(thinking_model_dir),
    )
    group = Group(job_id="j", group_id="g", prompt_text=task.prompt)
    rollout_ids = Engine.prompt_ids(engine, group_prompt(group))
    assert stages.prompts == [rollout_ids]
    text = engine.tokenizer.decode(rollout_ids)
    assert text.endswith("<think>\n\n</think>\n\n") is (not thinking)
