"""Black-box teacher: a model or person that returns text only (no log-probs). Two forms:

* ``corrected_response`` -- the teacher rewrites the student's response (chat completion);
  the rewrite is put in the self-teacher's context as the solution, and the self-teacher
  (``scorer``) scores the student's tokens: top-K log-probs, every objective works.
* ``sampled_tokens`` -- at every response position the teacher samples
  ``samples_per_position`` next tokens (one-token completions of the teacher context).
  They are sent as an empirical target: K entries with log-prob -log(K) each, duplicates
  kept, so sum_k p_k = 1 and -sum_k p_k log q(id_k) is the sample estimate of the
  cross-entropy to the teacher. Only DistIL and CE accept it (see support.py).
"""

from __future__ import annotations

import asyncio

import numpy as np

from distil.bus import TeacherScores

from .base import ScoreItem, ScoreStats
from .config import BlackBoxTeacherConfig
from .context import teacher_context
from .http import RemoteClient, TeacherRejected, TeacherUnavailable
from .self_teacher import SelfTeacher

REWRITE = (
    "{prompt}\n\nHere is an attempted answer:\n\n{response}\n\n{feedback}"
    "Rewrite the answer so that it is fully correct. Reply with the corrected answer only."
)


class BlackBoxTeacher:
    kind = "black_box"

    def __init__(
        self, config: BlackBoxTeacherConfig, tokenizer, *, scorer: SelfTeacher | None = None
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.stats = ScoreStats()
        self.remote = RemoteClient(config.url, config.retry, config.api_key_env)
        self.scorer = scorer
        if config.form == "corrected_response" and scorer is None:
            raise ValueError("a black-box teacher of form 'corrected_response' needs a self-teacher scorer")
        self._model: str | None = None
        self._sem = asyncio.Semaphore(64)

    async def _model_name(self) -> str:
        if self._model is None:
            self._model = await self.remote.model_name(self.config.model)
        return self._model

    async def score(self, items: list[ScoreItem]) -> list[TeacherScores | None]:
        if self.config.form == "corrected_response":
            return await self._corrected(items)
        return await self._sampled(items)

    # -------------------------------------------------------------- corrected_response

    async def correct(self, item: ScoreItem) -> str | None:
        feedback = f"Feedback on it:\n\n{item.feedback}\n\n" if item.feedback else ""
        content = REWRITE.format(prompt=item.prompt, response=item.response_text, feedback=feedback)
        try:
            model = await self._model_name()
            async with self._sem:
                body = await self.remote.request(
                    "POST",
                    "/v1/chat/completions",
                    {
                        "model": model,
                        "messages": [{"role": "user", "content": content}],
                        "temperature": self.config.correction_temperature,
                        "max_tokens": self.config.correction_max_tokens,
                    },
                )
        except (TeacherUnavailable, TeacherRejected):
            self.stats.unavailable += 1
            return None
        text = body["choices"][0]["message"]["content"] or ""
        return text.strip() or None

    async def _corrected(self, items: list[ScoreItem]) -> list[TeacherScores | None]:
        corrections = await asyncio.gather(*(self.correct(it) for it in items))
        keep = [i for i, c in enumerate(corrections) if c is not None]
        scored = await self.scorer.score([items[i] for i in keep], solutions=[corrections[i] for i in keep])
        out: list[TeacherScores | None] = [None] * len(items)
        for i, s in zip(keep, scored, strict=True):
            out[i] = s
        self.stats.scored += sum(o is not None for o in out)
        return out

    # -------------------------------------------------------------- sampled_tokens

    async def _next_tokens(self, model: str, prefix: list[int]) -> list[int]:
        s = self.config.samples_per_position
        async with self._sem:
            body = await self.remote.request(
                "POST",
                "/v1/completions",
                {"model": model, "prompt": prefix, "max_tokens": 1, "n": s, "temperature": 1.0},
            )
        out = []
        for choice in body["choices"][:s]:
            ids = self.tokenizer.encode(choice.get("text") or "", add_special_tokens=False)
            out.append(ids[0] if ids else int(self.tokenizer.eos_token_id))
        if len(out) != s:
            raise TeacherRejected(f"teacher returned {len(out)} of {s} samples")
        return out

    async def _sampled(self, items: list[ScoreItem]) -> list[TeacherScores | None]:
        s = self.config.samples_per_position

        async def one(item: ScoreItem):
            ctx = teacher_context(self.tokenizer, item, self.config)
            if ctx is None:
                self.stats.skipped_no_signal += 1
                return None
            try:
                model = await self._model_name()
                rows = await asyncio.gather(
                    *(
                        self._next_tokens(model, ctx.input_ids[:t])
                        for t in range(ctx.response_start, len(ctx.input_ids))
                    )
                )
            except (TeacherUnavailable, TeacherRejected):
                self.stats.unavailable += 1
                return None
            ids = np.asarray(rows, dtype=np.int32).reshape(len(rows), s)
            lps = np.full(ids.shape, -np.log(s), dtype=np.float32)
            self.stats.scored += 1
            return TeacherScores(top_ids=ids, top_logprobs=lps)

        return list(await asyncio.gather(*(one(it) for it in items)))

    async def update_weights(self, named_tensors, version: int, probe=None):
        if self.scorer is None:
            raise ValueError("a sampled-tokens black-box teacher has no weights to update")
        return await self.scorer.update_weights(named_tensors, version, probe)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
