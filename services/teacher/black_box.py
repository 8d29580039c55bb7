"""Black-box teacher: a model or person that returns text only (no log-probs). Two forms:

* ``corrected_response`` -- the teacher rewrites the student's response (chat completion);
  the rewrite is put in the self-teacher's context as the solution, and the self-teacher
  (``scorer``) scores the student's tokens: top-K log-probs, every objective works.
* ``sampled_tokens`` -- at every response position the teacher samples
  ``samples_per_position`` next tokens (one-token completions of the teacher context).
  They are sent as an empirical target: K entries with log-prob -log(K) each, duplicates
  kept, so sum_k p_k = 1 and -sum_k p_k log q(id_k) is the sample estimate of the
  cross-entropy to the teacher. Only DistIL and CE accept it (see support.py).
  The ids are the student's vocabulary, so the server's tokenizer is checked first (as
  the external teacher's, refused with :class:`TokenizerMismatch`), and the sampled ids
  come back as ids (vLLM's ``return_tokens_as_token_ids``: ``"token_id:1234"``), never
  as text re-encoded, which turns a partial UTF-8 token into U+FFFD and an empty
  (special) token into a guess.
"""

from __future__ import annotations

import asyncio

import numpy as np

from distil.bus import TeacherScores

from .base import ScoreItem, ScoreStats
from .config import BlackBoxTeacherConfig
from .context import teacher_context
from .external import PROBE_MESSAGES, TokenizerMismatch, check_same_tokenizer
from .http import RemoteClient, TeacherRejected, TeacherUnavailable
from .self_teacher import SelfTeacher

TOKEN_ID = "token_id:"  # vLLM's form of a token with return_tokens_as_token_ids

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
        self._checked: str | None = None
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(64)

    async def _model_name(self) -> str:
        if self._model is None:
            self._model = await self.remote.model_name(self.config.model)
        return self._model

    async def check_tokenizer(self) -> str:
        """``sampled_tokens`` sends and receives token ids: refuse (TokenizerMismatch) a server
        that tokenizes differently or does not return sampled tokens as ids. A
        ``corrected_response`` teacher exchanges text only and is not checked. Returns the
        served model name; TeacherUnavailable when the server does not answer."""
        async with self._lock:
            if self._checked is None:
                model = await self._model_name()
                if self.config.form == "sampled_tokens":
                    await check_same_tokenizer(
                        self.remote,
                        self.tokenizer,
                        model,
                        hint=(
                            "; a black box with another tokenizer can still teach as "
                            "form='corrected_response' (text only)"
                        ),
                    )
                    text = self.tokenizer.apply_chat_template(
                        PROBE_MESSAGES, tokenize=False, add_generation_prompt=True
                    )
                    probe = self.tokenizer.encode(text, add_special_tokens=False)
                    await self._request_tokens(model, probe, 1)  # answers with ids, or is refused
                self._checked = model
            return self._checked

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

    async def _request_tokens(self, model: str, prefix: list[int], n: int) -> list[int]:
        async with self._sem:
            body = await self.remote.request(
                "POST",
                "/v1/completions",
                {
                    "model": model,
                    "prompt": prefix,
                    "max_tokens": 1,
                    "n": n,
                    "temperature": 1.0,
                    "logprobs": 1,
                    "return_tokens_as_token_ids": True,
                },
            )
        out = [self._token_id(choice) for choice in body["choices"][:n]]
        if len(out) != n:
            raise TeacherRejected(f"teacher returned {len(out)} of {n} samples")
        return out

    def _token_id(self, choice: dict) -> int:
        """The sampled token of a one-token completion, as the id the server sampled."""
        tokens = (choice.get("logprobs") or {}).get("tokens") or []
        tok = tokens[0] if len(tokens) == 1 else None
        if not isinstance(tok, str) or not tok.startswith(TOKEN_ID) or not tok[len(TOKEN_ID) :].isdigit():
            raise TokenizerMismatch(
                f"the black-box teacher at {self.remote.url} did not return its sampled token as an id "
                f"(logprobs.tokens = {tokens[:2]!r}, expected ['{TOKEN_ID}<id>']): form='sampled_tokens' "
                "needs an OpenAI-compatible server that honours return_tokens_as_token_ids (vLLM does); "
                "text re-encoded would give other ids"
            )
        return int(tok[len(TOKEN_ID) :])

    async def _sampled(self, items: list[ScoreItem]) -> list[TeacherScores | None]:
        s = self.config.samples_per_position

        async def one(item: ScoreItem):
            ctx = teacher_context(self.tokenizer, item, self.config)
            if ctx is None:
                self.stats.skipped_no_signal += 1
                return None
            try:
                model = await self.check_tokenizer()
                rows = await asyncio.gather(
                    *(
                        self._request_tokens(model, ctx.input_ids[:t], s)
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
