"""Which objectives each teacher kind supports, the check the gateway runs at submission, and
the objective's teacher-target mode (``teacher_samples``) that follows from the teacher kind."""

from __future__ import annotations

from pydantic import TypeAdapter

from distil.losses.config import ObjectiveConfig
from distil.losses.registry import objective_class

from .config import BlackBoxTeacherConfig, TeacherConfig

# What a teacher kind delivers per response position:
#   "logprobs": top-K ids with log-probs over the full vocabulary (every objective);
#   "samples":  ids sampled from the teacher, as an empirical target (objectives whose
#               loss is a cross-entropy to the teacher: DistIL, CE; not SDPO/OPSD's divergences).
DELIVERS: dict[str, str] = {
    "self_ema": "logprobs",
    "self_frozen": "logprobs",
    "external": "logprobs",
    "black_box/corrected_response": "logprobs",  # the self-teacher scores the rewritten context
    "black_box/sampled_tokens": "samples",
}


def teacher_key(teacher: TeacherConfig) -> str:
    if isinstance(teacher, BlackBoxTeacherConfig):
        return f"black_box/{teacher.form}"
    return teacher.kind


def supports(teacher: TeacherConfig, objective: str) -> bool:
    obj = objective_class(objective)
    if not obj.needs_teacher:
        return True  # GRPO, SFT: the teacher is not used
    return DELIVERS[teacher_key(teacher)] == "logprobs" or not obj.needs_teacher_logprobs


def support_table(objectives: tuple[str, ...] = ("distil", "ce", "sdpo", "opsd", "grpo", "sft")) -> dict:
    """{teacher kind: {objective: supported}} for docs and the gateway."""
    adapter = TypeAdapter(TeacherConfig)
    examples = {
        "self_ema": {"kind": "self_ema"},
        "self_frozen": {"kind": "self_frozen"},
        "external": {"kind": "external", "url": "http://x"},
        "black_box/corrected_response": {"kind": "black_box", "url": "http://x"},
        "black_box/sampled_tokens": {"kind": "black_box", "url": "http://x", "form": "sampled_tokens"},
    }
    return {
        key: {o: supports(adapter.validate_python(ex), o) for o in objectives} for key, ex in examples.items()
    }


def check_teacher_objective(teacher: TeacherConfig, objective: str) -> None:
    """Raise ValueError when ``objective`` cannot be trained with ``teacher`` (call at job submission)."""
    if supports(teacher, objective):
        return
    key = teacher_key(teacher)
    raise ValueError(
        f"teacher {key!r} delivers sampled tokens only, but objective {objective!r} needs the teacher's "
        "log-probs (a divergence over the top-K support). Use objective 'distil' or 'ce' with this "
        "teacher, or a teacher with log-probs (self_ema, self_frozen, external, or black_box with "
        "form='corrected_response')"
    )


class TeacherObjectiveMismatch(ValueError):
    """An objective setting that contradicts what the teacher delivers; ``field`` is the
    ObjectiveConfig field to report (``objective.<field>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def objective_for_teacher(teacher: TeacherConfig, objective: ObjectiveConfig) -> ObjectiveConfig:
    """``objective`` with ``teacher_samples`` derived from what ``teacher`` delivers.

    A sampled-tokens teacher sends K ids a ~ pi_T with weight 1/K, not log-probs: the loss
    must be the sample estimate -1/K sum_k log pi(a_k) over the full vocabulary, which only
    ``teacher_samples=True`` computes (with it off, ``topk_tail=False`` renormalised the
    samples among themselves and K = 1 gave CE = 0). The mode is set explicitly on the
    returned config, so it survives ``model_dump(exclude_unset=True)`` on its way to the
    learner. Raises :class:`TeacherObjectiveMismatch` for an explicit setting that
    contradicts the teacher. Objectives without the field (GRPO, SFT) are returned as given.
    """
    if "teacher_samples" not in objective_class(objective.name).fields:
        return objective
    key = teacher_key(teacher)
    samples = DELIVERS[key] == "samples"
    explicit = objective.model_fields_set
    if "teacher_samples" in explicit and objective.teacher_samples != samples:
        if samples:
            msg = (
                f"teacher {key!r} (form 'sampled_tokens') sends tokens sampled from the teacher, not its "
                "log-probs: the loss is the sample estimate -log pi(a), a ~ pi_T, i.e. teacher_samples=true. "
                "Leave teacher_samples unset: it follows from the teacher kind"
            )
        else:
            msg = (
                f"teacher {key!r} sends log-probs over its top-K, not samples; teacher_samples=true is for a "
                "black_box teacher of form 'sampled_tokens' only. Leave teacher_samples unset: it follows "
                "from the teacher kind"
            )
        raise TeacherObjectiveMismatch("teacher_samples", msg)
    if samples and "topk_tail" in explicit and objective.topk_tail:
        raise TeacherObjectiveMismatch(
            "topk_tail",
            f"teacher {key!r} (form 'sampled_tokens') sends samples, which have no tail bucket: the sample "
            "estimate of the cross-entropy is over the full vocabulary. Leave topk_tail unset or false",
        )
    if not samples or "teacher_samples" in explicit:
        return objective
    return ObjectiveConfig.model_validate(
        {**objective.model_dump(exclude_unset=True), "teacher_samples": True}
    )
