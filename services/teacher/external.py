"""External teacher: any OpenAI-compatible server that returns prompt log-probs (e.g. ``vllm serve``).

Before the first scoring request the server's tokenizer is compared with the student's
on a probe text (chat template, code, non-ASCII): top-K ids from another vocabulary would
be meaningless, so a mismatch is refused with :class:`TokenizerMismatch`. Requests are
retried with backoff; a teacher that stays down yields no signal for the affected
responses (counted in ``stats``), and the group proceeds.
"""

from __future__ import annotations

import asyncio

import numpy as np

from distil.bus import TeacherScores

from .base import ScoreItem, ScoreStats
from .config import ExternalTeacherConfig
from .context import teacher_context
from .http import RemoteClient, TeacherRejected, TeacherUnavailable

PROBE_MESSAGES = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "Écris `def add(a, b):\n    return a + b` — 1+1=2? 日本語 🙂"},
]


class TokenizerMismatch(ValueError):
    """The external teacher tokenizes differently from the student."""


async def check_same_tokenizer(remote: RemoteClient, tokenizer, model: str, hint: str = "") -> None:
    """Raise :class:`TokenizerMismatch` unless the server at ``remote`` tokenizes the probe
    text exactly as ``tokenizer`` does (``POST /tokenize``, which vLLM and SGLang expose);
    a server without ``/tokenize`` cannot be checked and is refused too. ``hint`` ends the
    message (what to do instead)."""
    text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    mine = tokenizer.encode(text, add_special_tokens=False)
    try:
        theirs = await remote.request(
            "POST", "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}
        )
    except TeacherRejected as exc:
        raise TokenizerMismatch(
            f"cannot check the tokenizer of the teacher at {remote.url}: POST /tokenize "
            f"failed ({exc}). The teacher must expose /tokenize (vLLM and SGLang do){hint}"
        ) from exc
    tokens = list(theirs.get("tokens", []))
    if tokens != mine:
        first = next(
            (i for i, (a, b) in enumerate(zip(mine, tokens, strict=False)) if a != b),
            min(len(mine), len(tokens)),
        )
        raise TokenizerMismatch(
            f"teacher {model!r} at {remote.url} tokenizes differently from the student "
            f"({len(tokens)} vs {len(mine)} tokens on the probe text, first difference at token {first}: "
            f"{tokens[first : first + 3]} vs {mine[first : first + 3]}). Its token ids would index another "
            f"vocabulary; serve a teacher that shares the student's tokenizer{hint}"
        )


class ExternalTeacher:
    kind = "external"

    def __init__(self, config: ExternalTeacherConfig, tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.stats = ScoreStats()
        self.remote = RemoteClient(config.url, config.retry, config.api_key_env)
        self._model: str | None = None
        self._checked = asyncio.Lock()

    async def check_tokenizer(self) -> str:
        """Compare tokenizations of a probe text; returns the served model name. Raises
        TokenizerMismatch (never retried) or TeacherUnavailable."""
        async with self._checked:
            if self._model is None:
                model = await self.remote.model_name(self.config.model)
                await check_same_tokenizer(self.remote, self.tokenizer, model)
                self._model = model
            return self._model

    async def score(self, items: list[ScoreItem]) -> list[TeacherScores | None]:
        contexts = [teacher_context(self.tokenizer, it, self.config) for it in items]
        self.stats.skipped_no_signal += sum(c is None for c in contexts)
        if all(c is None for c in contexts):
            return [None] * len(items)
        try:
            model = await self.check_tokenizer()
        except TeacherUnavailable:
            n = sum(c is not None for c in contexts)
            self.stats.unavailable += n
            return [None] * len(items)

        async def one(ctx):
            if ctx is None:
                return None
            try:
                body = await self.remote.request(
                    "POST",
                    "/v1/completions",
                    {
                        "model": model,
                        "prompt": ctx.input_ids,
                        "max_tokens": 1,
                        "temperature": 1.0,
                        "prompt_logprobs": self.config.top_k,
                    },
                )
            except (TeacherUnavailable, TeacherRejected):
                self.stats.unavailable += 1
                return None
            return parse_prompt_logprobs(body, ctx.input_ids, ctx.response_start, self.config.top_k)

        out = list(await asyncio.gather(*(one(c) for c in contexts)))
        self.stats.scored += sum(o is not None for o in out)
        return out

    async def update_weights(self, named_tensors, version: int, probe=None):
        raise ValueError(
            "the external teacher's weights are managed by its own server; it accepts no updates"
        )

    def close(self) -> None:
        """Best effort: the HTTP client belongs to the loop it was used on."""
        try:
            asyncio.get_running_loop().create_task(self.remote.aclose())
        except RuntimeError:
            pass  # no loop running here: the connections close with the process


def parse_prompt_logprobs(body: dict, input_ids: list[int], start: int, k: int) -> TeacherScores:
    """OpenAI-completions ``prompt_logprobs`` (vLLM format) -> [T, k] top ids and log-probs."""
    plp = body["choices"][0].get("prompt_logprobs")
    n = len(input_ids)
    if plp is None or len(plp) != n:
        raise TeacherRejected(
            f"teacher returned prompt_logprobs for {0 if plp is None else len(plp)} of {n} positions; "
            "it must support the 'prompt_logprobs' request field (vLLM does)"
        )
    rows = n - start
    ids = np.zeros((rows, k), dtype=np.int32)
    lps = np.zeros((rows, k), dtype=np.float32)
    for r in range(rows):
        entries = sorted(
            (
                (v["rank"], int(tid), v["logprob"])
                for tid, v in plp[start + r].items()
                if v.get("rank") and v["rank"] <= k
            ),
        )
        if len(entries) < k:
            raise TeacherRejected(
                f"teacher returned {len(entries)} of the top-{k} log-probs at position {start + r}"
            )
        for j, (_, tid, lp) in enumerate(entries[:k]):
            ids[r, j] = tid
            lps[r, j] = lp
    return TeacherScores(top_ids=ids, top_logprobs=lps)
