"""The job spec as the gateway validates it: the core spec with the service-owned sections
typed by each service's own config class, and the cross-field checks that need them.

This module is part of the entry-point layer (like the CLI): it may import service
configs; nothing in ``distil`` below the gateway imports it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distil.engine.config import EngineConfig, training_sampling_errors
from distil.jobs.spec import JobSpec, SpecError, field_errors
from distil.losses.registry import objective_class
from services.feedback.sources import SourceConfig
from services.learner.config import TrainConfig
from services.learner.stage import StageConfig
from services.teacher.config import SelfEMATeacherConfig, TeacherConfig
from services.teacher.support import TeacherObjectiveMismatch, check_teacher_objective, objective_for_teacher


class FeedbackSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] | None = Field(
        default=None, description="None = the feedback service's default (environment output + sibling)."
    )


def _check(section: str, model, data: dict[str, Any], errors: list[dict[str, str]]):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors.extend(field_errors(exc, (section,)))
        return None


class TypedSections(BaseModel):
    """The service-owned sections after validation (not stored: the store keeps the raw spec)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: EngineConfig
    teacher: Any
    feedback: FeedbackSection
    training: TrainConfig
    learner: StageConfig


class _TeacherBox(BaseModel):
    teacher: TeacherConfig


def validate_spec(document: dict[str, Any]) -> tuple[JobSpec, TypedSections]:
    """Validate a submitted spec; raise SpecError with field paths listing every problem found."""
    try:
        spec = JobSpec.model_validate(document)
    except ValidationError as exc:
        raise SpecError(field_errors(exc)) from None
    errors: list[dict[str, str]] = []
    if "model" in spec.engine:
        errors.append({"loc": "engine.model", "msg": "set the model at the top level ('model')"})
    errors.extend(_thinking_errors(spec))
    engine = _check(
        "engine",
        EngineConfig,
        {**spec.engine, "model": spec.model, "enable_thinking": spec.enable_thinking},
        errors,
    )
    box = _check("", _TeacherBox, {"teacher": spec.teacher}, errors)
    feedback = _check("feedback", FeedbackSection, spec.feedback, errors)
    training = _check("training", TrainConfig, spec.training, errors)
    if "checkpoint_every" in spec.learner:
        errors.append({"loc": "learner.checkpoint_every", "msg": "use checkpoint.every_steps"})
    learner = _check(
        "learner", StageConfig, {**spec.learner, "checkpoint_every": spec.checkpoint.every_steps}, errors
    )
    for e in errors:  # _TeacherBox paths start with an empty section
        e["loc"] = e["loc"].lstrip(".")
    teacher = _with_thinking(box.teacher, spec.enable_thinking) if box is not None else None
    if teacher is not None:
        try:
            check_teacher_objective(teacher, spec.objective.name)
        except ValueError as exc:
            errors.append({"loc": "teacher.kind", "msg": str(exc), "type": "incompatible"})
        try:  # teacher_samples follows from the teacher kind (#22 item 9)
            spec = spec.model_copy(update={"objective": objective_for_teacher(teacher, spec.objective)})
        except TeacherObjectiveMismatch as exc:
            errors.append({"loc": f"objective.{exc.field}", "msg": str(exc), "type": "incompatible"})
        if (
            training is not None
            and isinstance(teacher, SelfEMATeacherConfig)
            and "teacher_ema_rate" in spec.training
            and training.teacher_ema_rate != teacher.rate
        ):
            errors.append(
                {
                    "loc": "training.teacher_ema_rate",
                    "msg": f"disagrees with teacher.rate ({teacher.rate}); set only teacher.rate",
                }
            )
    obj = objective_class(spec.objective.name)
    if spec.objective.name == "grpo" and spec.rollout.n < 2:
        errors.append({"loc": "rollout.n", "msg": "GRPO needs at least 2 responses per prompt"})
    for name, msg in training_sampling_errors(spec.rollout).items():
        errors.append({"loc": f"rollout.{name}", "msg": msg, "type": "training_sampling"})
    if obj.needs_teacher and feedback is not None and feedback.sources == []:
        errors.append(
            {"loc": "feedback.sources", "msg": f"objective {spec.objective.name!r} needs at least one source"}
        )
    errors += _human_review_errors(feedback, spec)
    if engine is not None and spec.rollout.max_tokens >= engine.max_model_len:
        errors.append(
            {
                "loc": "rollout.max_tokens",
                "msg": f"must be below engine.max_model_len ({engine.max_model_len}) to leave room for the prompt",
            }
        )
    errors.extend(_tensor_parallel_errors(spec, engine, teacher))
    errors.extend(_lora_errors(engine, training, teacher))
    if errors:
        raise SpecError(errors)
    # One source of truth for the EMA rate: the self-teacher that receives the EMA weights.
    ema = teacher.scorer if teacher is not None and teacher.kind == "black_box" else teacher
    if isinstance(ema, SelfEMATeacherConfig):
        training = training.model_copy(update={"teacher_ema_rate": ema.rate})
    elif ema is not None and ema.kind == "self_frozen":
        training = training.model_copy(update={"teacher_ema_rate": 0.0})
    return spec, TypedSections(
        engine=engine, teacher=teacher, feedback=feedback, training=training, learner=learner
    )


def _thinking_errors(spec: JobSpec) -> list[dict[str, str]]:
    """Thinking is one job setting: the sections with a switch of their own may not set it,
    or rollouts, teacher contexts and evaluation prompts could be rendered differently."""
    found = ["engine.enable_thinking"] if "enable_thinking" in spec.engine else []
    teacher = spec.teacher if isinstance(spec.teacher, dict) else {}
    scorer = teacher.get("scorer")
    for prefix, section in (
        ("teacher", teacher),
        ("teacher.scorer", scorer if isinstance(scorer, dict) else {}),
    ):
        for key in ("template", "engine"):
            sub = section.get(key)
            if isinstance(sub, dict) and "enable_thinking" in sub:
                found.append(f"{prefix}.{key}.enable_thinking")
    msg = (
        "set thinking once, at the top level ('enable_thinking'): it renders the rollouts, "
        "the teacher contexts and the evaluation prompts alike"
    )
    return [{"loc": loc, "msg": msg, "type": "thinking"} for loc in found]


def _with_thinking(teacher, enable_thinking: bool):
    """The teacher config with the job's thinking switch in its template (and its engine's and
    its scorer's, where it has them)."""
    update: dict[str, Any] = {
        "template": teacher.template.model_copy(update={"enable_thinking": enable_thinking})
    }
    if getattr(teacher, "engine", None) is not None:
        update["engine"] = teacher.engine.model_copy(update={"enable_thinking": enable_thinking})
    if teacher.kind == "black_box":
        update["scorer"] = _with_thinking(teacher.scorer, enable_thinking)
    return teacher.model_copy(update=update)


def _tensor_parallel_errors(spec: JobSpec, engine: EngineConfig | None, teacher) -> list[dict[str, str]]:
    """A replica whose engine shards over N GPUs must reserve exactly N (Ray hands it those)."""
    out = []
    engines = {"rollout": engine}
    if teacher is not None and teacher.kind in ("self_ema", "self_frozen"):
        engines["teacher"] = teacher.engine or engine
    for stage, eng in engines.items():
        gpus = getattr(spec.placement, f"{stage}_gpus")
        if eng is not None and eng.tensor_parallel_size > 1 and gpus != eng.tensor_parallel_size:
            out.append(
                {
                    "loc": f"placement.{stage}_gpus",
                    "msg": f"the {stage} engine shards over {eng.tensor_parallel_size} GPUs "
                    f"(tensor_parallel_size); set placement.{stage}_gpus to {eng.tensor_parallel_size}",
                    "type": "placement",
                }
            )
    return out


def _human_review_errors(feedback: FeedbackSection | None, spec: JobSpec) -> list[dict[str, str]]:
    """At most one human source, and its deadline shorter than the driver's step timeouts
    (groups waiting for reviewers hold up the learner's steps for up to the deadline)."""
    humans = [(i, s) for i, s in enumerate(feedback.sources or []) if s.kind == "human"] if feedback else []
    errors = []
    if len(humans) > 1:
        errors.append(
            {"loc": f"feedback.sources.{humans[1][0]}", "msg": "at most one source of kind 'human'"}
        )
    limit = min(spec.timeouts.first_step_s, spec.timeouts.step_s)
    for i, source in humans:
        if source.deadline_s >= limit:
            errors.append(
                {
                    "loc": f"feedback.sources.{i}.deadline_s",
                    "msg": f"must be below timeouts.step_s and timeouts.first_step_s ({limit:.0f}s): groups "
                    "waiting for reviewers hold up the learner's steps for up to the deadline",
                }
            )
    return errors


def _lora_errors(engine: EngineConfig | None, training: TrainConfig | None, teacher) -> list[dict[str, str]]:
    """A LoRA student is published as its adapter, which only a rollout engine started with
    ``engine.lora`` loads; full fine-tuning publishes full weights, which such an engine
    refuses, and so does the EMA teacher's engine (it always receives full weights)."""
    if engine is None or training is None:
        return []
    ema, loc = teacher, "teacher.engine.lora"
    if teacher is not None and teacher.kind == "black_box":
        ema, loc = teacher.scorer, "teacher.scorer.engine.lora"
    if isinstance(ema, SelfEMATeacherConfig) and ema.engine is not None and ema.engine.lora is not None:
        return [{"loc": loc, "msg": "the EMA teacher receives merged full weights; leave its lora unset"}]
    if training.lora is not None and engine.lora is None:
        return [
            {
                "loc": "engine.lora",
                "msg": f"training.lora is set, so the rollout engine receives LoRA adapters: set engine.lora "
                f"(e.g. {{max_rank: {training.lora.r}}}; max_rank must be one of vLLM's 1, 8, 16, 32, 64, ...)",
            }
        ]
    if training.lora is None and engine.lora is not None:
        return [
            {
                "loc": "engine.lora",
                "msg": "set only with training.lora: full fine-tuning publishes full weights, "
                "which an engine with LoRA refuses",
            }
        ]
    if training.lora is not None and engine.lora is not None and engine.lora.max_rank < training.lora.r:
        return [
            {
                "loc": "engine.lora.max_rank",
                "msg": f"{engine.lora.max_rank} is below training.lora.r ({training.lora.r}); "
                "the engine would refuse the adapter",
            }
        ]
    return []
