"""Self-teachers: the student's own network (EMA copy or frozen initial weights) on a vLLM engine."""

from __future__ import annotations

import asyncio

from distil.bus import TeacherScores
from distil.engine import EngineConfig
from distil.engine.runner import EngineRunner

from .base import ScoreItem, ScoreStats
from .config import SelfEMATeacherConfig, SelfFrozenTeacherConfig
from .context import context_budget, teacher_context


class SelfTeacher:
    """Scores teacher contexts with ``prompt_logprobs`` on its own engine.

    ``self_ema`` accepts weight updates from the learner (the EMA weights, with a probe);
    ``self_frozen`` refuses them: it keeps the initial weights for the whole job.
    """

    def __init__(
        self,
        config: SelfEMATeacherConfig | SelfFrozenTeacherConfig,
        student_model: str | None = None,
        *,
        runner: EngineRunner | None = None,
    ) -> None:
        self.config = config
        self.kind = config.kind
        self.stats = ScoreStats()
        if runner is None:
            engine_cfg = config.engine or EngineConfig(model=student_model or "")
            if not engine_cfg.model:
                raise ValueError("a self-teacher needs the student's model (teacher.engine.model)")
            if engine_cfg.max_logprobs < config.top_k:
                engine_cfg = engine_cfg.model_copy(update={"max_logprobs": config.top_k})
            runner = EngineRunner(engine_cfg)
        self.runner = runner
        # What the engine can take: a longer context loses the start of its prompt part.
        self.max_length = context_budget(config.max_length, runner.config.max_model_len)

    @property
    def tokenizer(self):
        return self.runner.tokenizer

    async def score(
        self, items: list[ScoreItem], *, solutions: list[str | None] | None = None
    ) -> list[TeacherScores | None]:
        contexts = [
            teacher_context(
                self.tokenizer,
                it,
                self.config,
                solution=(solutions[i] if solutions else None),
                max_length=self.max_length,
            )
            for i, it in enumerate(items)
        ]
        engine = self.runner.engine
        await self.runner.call(
            engine.wait_verified, self.config.engine.timeout_s if self.config.engine else 600.0
        )

        async def one(ctx):
            if ctx is None:
                return None
            top = await self.runner.call(
                engine.score_prompt_topk, ctx.input_ids, ctx.response_start, self.config.top_k
            )
            return TeacherScores(top_ids=top.ids, top_logprobs=top.logprobs)

        out = await asyncio.gather(*(one(c) for c in contexts))
        self.stats.scored += sum(o is not None for o in out)
        self.stats.skipped_no_signal += sum(o is None for o in out)
        return list(out)

    async def update_weights(self, named_tensors, version: int, probe=None):
        if self.kind == "self_frozen":
            raise ValueError(
                "the self_frozen teacher keeps the initial weights; it accepts no weight updates "
                "(use kind='self_ema' for a teacher that follows the student)"
            )
        return await self.runner.call(self.runner.engine.update_weights, named_tensors, version, probe)

    def close(self) -> None:
        self.runner.close()
