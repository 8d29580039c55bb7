"""The teacher stage: feedback groups in, scored groups out (plain class, testable without Serve)."""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from distil.bus import Group
from distil.timeline import timed

from .base import ScoreItem, Teacher
from .config import BlackBoxTeacherConfig, ExternalTeacherConfig, TeacherConfig


def group_messages(group: Group) -> list[dict[str, str]]:
    """The student's chat messages: ``metadata['messages']`` (JSON) or one user turn of prompt_text."""
    raw = group.metadata.get("messages")
    if raw:
        return json.loads(raw)
    return [{"role": "user", "content": group.prompt_text}]


def score_items(group: Group) -> list[ScoreItem]:
    messages = group_messages(group)
    prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), group.prompt_text)
    items = []
    for r in group.responses:
        fb = r.feedback
        items.append(
            ScoreItem(
                messages=messages,
                prompt=prompt,
                response_ids=[int(t) for t in r.token_ids],
                response_text=r.text,
                solution=(fb.solution_text or None) if fb else None,
                feedback=(fb.feedback_text or None) if fb else None,
            )
        )
    return items


class TeacherStage:
    """Scores every response that has a teacher signal; the others keep ``teacher=None``."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.groups = 0

    async def handle(self, group: Group) -> Group:
        before = self.teacher.stats.unavailable
        with timed(group, "teacher"):
            scores = await self.teacher.score(score_items(group))
        for response, s in zip(group.responses, scores, strict=True):
            response.teacher = s
        self.groups += 1
        if self.teacher.stats.unavailable > before:
            # Proceeds without (some) teacher signal; counted, and marked for the learner's metrics.
            self.teacher.stats.failed_groups += 1
            group.metadata["teacher_unavailable"] = str(self.teacher.stats.unavailable - before)
        return group

    def metrics(self) -> dict[str, float]:
        s = self.teacher.stats
        return {
            "teacher_groups": self.groups,
            "teacher_scored": s.scored,
            "teacher_skipped_no_signal": s.skipped_no_signal,
            "teacher_unavailable": s.unavailable,
            "teacher_groups_without_signal": s.failed_groups,
        }


def build_teacher(config: TeacherConfig | dict, student_model: str) -> Teacher:
    """The teacher of a job (self-teachers start their engine here)."""
    from transformers import AutoTokenizer

    from .black_box import BlackBoxTeacher
    from .external import ExternalTeacher
    from .self_teacher import SelfTeacher

    cfg = TypeAdapter(TeacherConfig).validate_python(config) if isinstance(config, dict) else config
    if isinstance(cfg, ExternalTeacherConfig):
        return ExternalTeacher(cfg, AutoTokenizer.from_pretrained(student_model))
    if isinstance(cfg, BlackBoxTeacherConfig):
        scorer = SelfTeacher(cfg.scorer, student_model) if cfg.form == "corrected_response" else None
        tok = scorer.tokenizer if scorer else AutoTokenizer.from_pretrained(student_model)
        return BlackBoxTeacher(cfg, tok, scorer=scorer)
    return SelfTeacher(cfg, student_model)
