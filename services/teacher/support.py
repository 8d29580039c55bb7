"""Which objectives each teacher kind supports, and the check the gateway runs at submission."""

from __future__ import annotations

from pydantic import TypeAdapter

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
