"""Grade a group: every response through its task's verifier on a bounded worker pool,
then the configured feedback sources over the whole group."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import TypeAdapter

from distil.data import Task

from .callbacks import CallbackRegistry
from .config import FeedbackConfig
from .group import GroupContext, GroupFeedback, ResponseFeedback
from .sandbox import Sandbox, make_sandbox
from .sources import SourceConfig, make_source
from .sources.protocol import FeedbackSource
from .verifiers import Grade, Split, Verifiers

FEEDBACK_KINDS = ("environment", "external")  # sources whose text is feedback, not a solution
_SOURCES = TypeAdapter(list[SourceConfig])


class Grader:
    def __init__(
        self,
        config: FeedbackConfig | None = None,
        *,
        sandbox: Sandbox | None = None,
        callbacks: CallbackRegistry | None = None,
    ) -> None:
        self.config = config or FeedbackConfig()
        self.sandbox = sandbox or make_sandbox(self.config.sandbox)
        self.verifiers = Verifiers(self.sandbox, self.config.verifiers)
        self.callbacks = callbacks
        self.pool = ThreadPoolExecutor(
            self.config.workers or self.config.sandbox.slots, thread_name_prefix="grader"
        )
        self._sources = self.build_sources(self.config.sources)

    def build_sources(self, configs: Sequence[SourceConfig]) -> list[FeedbackSource]:
        return [make_source(c, self.callbacks, self.config.callback_base_url) for c in configs]

    def grade(self, task: Task, response: str, *, split: Split = "public", truncated: bool = False) -> Grade:
        return self.verifiers.for_kind(task.verifier).grade(task, response, split=split, truncated=truncated)

    def grade_group(
        self,
        task: Task,
        responses: Sequence[str],
        *,
        split: Split = "public",
        truncated: Sequence[bool] | None = None,
        sources: Sequence[SourceConfig | dict[str, Any]] | None = None,
        job_id: str | None = None,
        group_id: str | None = None,
    ) -> GroupFeedback:
        """Per response: reward, success, per-test outcomes, feedback text and solution.

        ``sources`` overrides the configured feedback sources for this call (per job)."""
        responses = list(responses)
        flags = list(truncated) if truncated is not None else [False] * len(responses)
        if len(flags) != len(responses):
            raise ValueError(f"truncated has {len(flags)} entries for {len(responses)} responses")
        futures = [
            self.pool.submit(self.grade, task, text, split=split, truncated=flag)
            for text, flag in zip(responses, flags, strict=True)
        ]
        grades = [f.result() for f in futures]
        items = [ResponseFeedback.from_grade(i, g) for i, g in enumerate(grades)]
        ctx = GroupContext(
            task=task, responses=responses, grades=grades, items=items, job_id=job_id, group_id=group_id
        )
        chosen = (
            self._sources if sources is None else self.build_sources(_SOURCES.validate_python(list(sources)))
        )
        try:
            for source in chosen:
                source.apply(ctx)
        finally:
            if sources is not None:
                for source in chosen:
                    close = getattr(source, "close", None)
                    if close is not None:
                        close()
        for item in items:
            texts = [item.texts[k] for k in FEEDBACK_KINDS if k in item.texts]
            item.feedback = "\n\n".join(texts) if texts else None
        ctx.count("responses", len(items))
        ctx.count("successes", sum(item.success for item in items))
        return GroupFeedback(task_id=task.id, responses=items, counters=ctx.counters)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for source in self._sources:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self.sandbox.close()
