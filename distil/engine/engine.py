"""A thin async wrapper over vLLM's ``AsyncLLM``, shared by the rollout and teacher services.

Three operations, all on token ids:

* :meth:`Engine.generate` — G samples per prompt with the log-prob of each sampled token
  under the distribution actually sampled from (vLLM ``logprobs_mode="processed_logprobs"``:
  after temperature / top-p / top-k), finish reason and truncation flag;
* :meth:`Engine.score_prompt_topk` — top-K next-token ids and log-probs (temperature 1,
  normalised over the full vocabulary) at every position of a given sequence, via vLLM
  prompt log-probs;
* :meth:`Engine.update_weights` — in-place, chunked, versioned weight updates, verified
  against a probe supplied by the learner;
* :meth:`Engine.update_adapter` — the same for a LoRA adapter on the base weights
  (``EngineConfig.lora``): every request then runs with the current adapter.

Build it inside a running event loop (or use :class:`distil.engine.runner.EngineRunner`,
which owns one) and call :meth:`shutdown` when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.engine.adapter import LoraAdapter, check_adapter, model_weight_shapes, write_peft_dir
from distil.engine.config import EngineConfig, SamplingConfig
from distil.engine.errors import EngineError, EngineTimeout, ProbeMismatch, PromptTooLong, WeightVersionError
from distil.engine.types import Probe, Sample, TopK, UpdateResult
from distil.engine.worker_ext import pack_tensor
from distil.hardware import resolve_dtype

log = logging.getLogger(__name__)

WORKER_EXTENSION = "distil.engine.worker_ext.WeightUpdateExtension"
_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}

Prompt = Sequence[int] | Sequence[Mapping[str, str]]


def engine_dtype(cfg: EngineConfig) -> str:
    """The dtype the engine runs in: ``cfg.dtype`` with ``"auto"`` resolved for this machine
    (bf16 only where native, see :mod:`distil.hardware`)."""
    return resolve_dtype(cfg.dtype, "cpu" if _cpu_platform() else "cuda", what="engine")


def _engine_args(cfg: EngineConfig):
    from vllm import AsyncEngineArgs

    kwargs: dict[str, Any] = dict(
        model=cfg.model,
        dtype=engine_dtype(cfg),
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        max_logprobs=cfg.max_logprobs,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        enforce_eager=cfg.enforce_eager,
        enable_prefix_caching=cfg.enable_prefix_caching,
        seed=cfg.seed,
        logprobs_mode="processed_logprobs",
        worker_extension_cls=WORKER_EXTENSION,
        disable_log_stats=True,
    )
    if cfg.kv_cache_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    if cfg.lora is not None:
        # One adapter serves at a time (the current version); CPU room for two, so the next
        # version loads while the previous one is still there.
        kwargs.update(enable_lora=True, max_lora_rank=cfg.lora.max_rank, max_loras=1, max_cpu_loras=2)
    if _cpu_platform():
        # vLLM's CPU worker crashes on a seeded request whose prefill is split over steps
        # (it rewinds the request's generator, and CPU generators have no offset): schedule
        # whole prompts only. Needs a step budget of at least one full-length prompt.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(cfg.max_model_len, 4096)
    return AsyncEngineArgs(**kwargs)


def _cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class Engine:
    """One vLLM engine plus the policy version it serves."""

    def __init__(self, config: EngineConfig, *, version: int = 0) -> None:
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.llm = AsyncLLM.from_engine_args(_engine_args(config))
        self.dtype: torch.dtype = self.llm.model_config.dtype
        self.vocab_size = int(self.llm.model_config.get_vocab_size())
        self.tied_embeddings = bool(getattr(self.llm.model_config.hf_config, "tie_word_embeddings", False))
        self.version = version
        self.verified = True  # False after a failed or inconsistent update, or while expecting one
        self.expected = 0  # the job's weights version, while waiting for the learner to send them
        self._update_lock = asyncio.Lock()
        self._closed = False
        # LoRA (config.lora): the adapter every request runs with (None: the base weights), a
        # fresh vLLM LoRA id per loaded adapter, and the adapter directories still on disk.
        self.lora_request = None
        self._lora_ids = itertools.count(1)
        self._adapter_dirs: list[Path] = []
        self._adapter_root: Path | None = None
        self._weight_shapes: dict[str, tuple[int, ...]] | None = None  # the base model's, read once

    # ------------------------------------------------------------------ prompts

    def prompt_ids(self, prompt: Prompt, *, enable_thinking: bool | None = None) -> list[int]:
        """Token ids of a prompt: ids as given, or chat messages through the chat template
        with the generation prompt (thinking off unless configured)."""
        if len(prompt) and isinstance(prompt[0], Mapping):
            think = self.config.enable_thinking if enable_thinking is None else enable_thinking
            ids = self.tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=True, enable_thinking=think
            )
            if isinstance(ids, Mapping):  # BatchEncoding
                ids = ids["input_ids"]
            return [int(t) for t in ids]
        return [int(t) for t in prompt]

    def fit_prompt(self, ids: list[int]) -> list[int]:
        return fit_prompt(ids, self.config.max_model_len, self.config.overlong_prompt)

    # ------------------------------------------------------------------ generate

    async def generate(
        self, prompt: Prompt, sampling: SamplingConfig, *, enable_thinking: bool | None = None
    ) -> list[Sample]:
        """``sampling.n`` responses to one prompt (token ids or chat messages)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = self.fit_prompt(self.prompt_ids(prompt, enable_thinking=enable_thinking))
        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=min(sampling.max_tokens, self.config.max_model_len - len(ids)),
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            logprobs=0,  # the sampled token's log-prob only
            flat_logprobs=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        version, lora = self.version, self.lora_request
        out = await self._final(
            self.llm.generate(
                {"prompt_token_ids": ids}, params, f"gen-{uuid.uuid4().hex}", lora_request=lora
            ),
            "generate",
        )
        samples = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            tok = np.asarray(c.token_ids, dtype=np.int32)
            lps = c.logprobs
            if lps is None or len(lps) != len(tok):
                raise EngineError(
                    f"vLLM returned {0 if lps is None else len(lps)} log-probs for {len(tok)} tokens"
                )
            # FlatLogprobs with logprobs=0: exactly one entry (the sampled token) per position.
            lp = np.asarray([lps.logprobs[s] for s in lps.start_indices], dtype=np.float32)
            samples.append(
                Sample(
                    token_ids=tok,
                    logprobs=lp,
                    finish_reason=_FINISH.get(c.finish_reason or "abort", "abort"),
                    text=c.text,
                    policy_version=version,
                )
            )
        return samples

    # ------------------------------------------------------------------ scoring

    async def score_prompt_topk(self, input_ids: Sequence[int], start: int, k: int) -> TopK:
        """Top-``k`` ids and log-probs of p(. | input_ids[:t]) for t = start .. len-1 (temperature 1).

        Row i describes the distribution of the token at position ``start + i``, so for a
        teacher context ``start`` is where the student's response begins.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = [int(t) for t in input_ids]
        n = len(ids)
        if not 1 <= start <= n:
            raise ValueError(f"start={start} must lie in [1, {n}] for a sequence of {n} tokens")
        if k < 1 or k > self.config.max_logprobs:
            raise ValueError(
                f"k={k} must lie in [1, max_logprobs={self.config.max_logprobs}]; raise max_logprobs"
            )
        if n + 1 > self.config.max_model_len:
            raise PromptTooLong(
                f"sequence of {n} tokens does not fit the context window {self.config.max_model_len}"
            )
        params = SamplingParams(
            max_tokens=1,
            temperature=1.0,
            prompt_logprobs=k,
            detokenize=False,
            flat_logprobs=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        out = await self._final(
            self.llm.generate(
                {"prompt_token_ids": ids},
                params,
                f"score-{uuid.uuid4().hex}",
                lora_request=self.lora_request,
            ),
            "scoring",
        )
        return _topk_from_prompt_logprobs(out.prompt_logprobs, start, n, k)

    async def score_tokens(self, input_ids: Sequence[int]) -> np.ndarray:
        """log p(input_ids[t] | input_ids[:t]) for t = 1 .. len-1, at temperature 1."""
        return (await self.score_prompt_topk(input_ids, 1, 1)).token_logprobs

    async def _final(self, stream, what: str):
        async def drain():
            last = None
            async for out in stream:
                last = out
            return last

        try:
            out = await asyncio.wait_for(drain(), self.config.timeout_s)
        except TimeoutError as exc:
            raise EngineTimeout(
                f"{what} did not finish within {self.config.timeout_s:.0f}s (engine.timeout_s); "
                "the engine may be overloaded or stuck"
            ) from exc
        if out is None:
            raise EngineError(f"{what}: vLLM returned no output")
        return out

    # ------------------------------------------------------------------ weights

    async def update_weights(
        self,
        named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
        version: int,
        probe: Probe | None = None,
    ) -> UpdateResult:
        """Load new weights (Hugging Face names) in place as policy ``version``, then verify ``probe``.

        Ordered and idempotent per version: repeating the version already loaded and verified
        is a no-op; an older version is refused. In-flight requests are handled per
        ``pause_mode``; the prefix cache is cleared. Raises ProbeMismatch naming the
        learner's and the engine's version when the engine's log-probs on the probe differ
        from the learner's by more than ``probe_tolerance``.
        """
        if self.config.lora is not None:
            raise EngineError(
                f"full weights version {version} sent to an engine that serves LoRA adapters (engine.lora "
                "is set); publish the adapter (update_adapter), or start this engine without engine.lora"
            )
        if isinstance(named_tensors, Mapping):  # the learner publishes {name: tensor}
            named_tensors = named_tensors.items()
        return await self._versioned_update(
            "weight update", version, probe, lambda: self._load(named_tensors, version)
        )

    async def _versioned_update(self, what: str, version: int, probe: Probe | None, load) -> UpdateResult:
        """The update contract shared by full weights and adapters: one update at a time;
        the version already loaded and verified is a no-op, an older one is refused; ``load()``
        (returning ``(tensors, chunks)``) applies it; then ``probe`` is verified against it."""
        async with self._update_lock:
            if version == self.version and self.verified:
                return UpdateResult(version=version, applied=False)
            if version < self.version:
                raise WeightVersionError(
                    f"{what} to version {version} arrived after version {self.version}; "
                    "updates must be applied in increasing version order (drop the stale one)"
                )
            previous = self.version
            t0 = time.perf_counter()
            tensors, chunks = await load()
            load_s = time.perf_counter() - t0
            self.version = version
            error = None
            if probe is not None:
                error = await self._verify(probe, version, previous)
            self.verified = True
            self.expected = 0
            return UpdateResult(
                version=version,
                applied=True,
                tensors=tensors,
                chunks=chunks,
                load_s=load_s,
                verify_s=time.perf_counter() - t0 - load_s,
                probe_error=error,
            )

    async def update_adapter(
        self, adapter: LoraAdapter, version: int, probe: Probe | None = None
    ) -> UpdateResult:
        """Serve the base weights + ``adapter`` as policy ``version``, then verify ``probe`` with it.

        The contract of :meth:`update_weights`: ordered and idempotent per version, in-flight
        requests per ``pause_mode``, prefix cache cleared, ``ProbeMismatch`` naming both
        versions. The adapter is written as a PEFT directory and loaded under a fresh vLLM
        LoRA id (an id is never reused, so no cached older adapter can answer for it); once
        it serves, the previous adapter is removed. If vLLM cannot load it, the engine keeps
        serving the previous version and ``EngineError`` says why.
        """
        if self.config.lora is None:
            raise EngineError(
                f"LoRA adapter version {version} sent to an engine started without LoRA (engine.lora "
                "is unset); start the rollout engine with engine.lora (max_rank >= the adapter's r), "
                "or publish merged full weights with update_weights"
            )
        if self._weight_shapes is None:
            self._weight_shapes = model_weight_shapes(self.config.model)
        try:
            check_adapter(adapter, self.config.lora.max_rank, self._weight_shapes)
        except ValueError as exc:
            raise ValueError(f"LoRA adapter version {version} refused: {exc}") from exc
        from vllm.lora.request import LoRARequest

        async def load() -> tuple[int, int]:
            lora_id = next(self._lora_ids)
            path = write_peft_dir(adapter, self._adapter_path(version, lora_id), self.dtype)
            request = LoRARequest(f"distil-v{version}-{lora_id}", lora_id, str(path))
            await self.llm.pause_generation(mode=self.config.pause_mode, clear_cache=True)
            try:
                try:
                    await self.llm.add_lora(request)
                except BaseException as exc:
                    shutil.rmtree(path, ignore_errors=True)
                    raise EngineError(
                        f"vLLM could not load the LoRA adapter of version {version} "
                        f"({type(exc).__name__}: {exc}); the engine still serves version {self.version}"
                    ) from exc
                old, self.lora_request = self.lora_request, request
                self.verified = False
                self.version = version
                self._adapter_dirs.append(path)
                try:
                    if old is not None:
                        await self.llm.remove_lora(old.lora_int_id)
                    await self.llm.reset_prefix_cache()
                except BaseException as exc:
                    raise EngineError(
                        f"LoRA adapter version {version} loaded, but removing the previous adapter or "
                        f"clearing the prefix cache failed ({type(exc).__name__}: {exc}); resend the update"
                    ) from exc
            finally:
                await self.llm.resume_generation()
            # A request frozen by pause_mode="keep" may make vLLM reload the previous adapter
            # from its directory: keep the newest two.
            while len(self._adapter_dirs) > 2:
                shutil.rmtree(self._adapter_dirs.pop(0), ignore_errors=True)
            return len(adapter.tensors), 1

        return await self._versioned_update("LoRA adapter update", version, probe, load)

    def _adapter_path(self, version: int, lora_id: int) -> Path:
        if self._adapter_root is None:
            assert self.config.lora is not None
            if self.config.lora.adapter_dir is not None:
                base = Path(self.config.lora.adapter_dir)
            else:
                from distil.paths import data_dir

                base = data_dir() / "engine-adapters"
            self._adapter_root = base / f"engine-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return self._adapter_root / f"v{version}-id{lora_id}"

    async def _rpc(self, method: str, *args: Any):
        return await self.llm.collective_rpc(method, timeout=self.config.timeout_s, args=args)

    async def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> tuple[int, int]:
        limit = int(self.config.weight_chunk_mib * 2**20)
        await self.llm.pause_generation(mode=self.config.pause_mode, clear_cache=True)
        self.verified = False
        tensors = chunks = 0
        try:
            await self._rpc("distil_begin_update", version)
            names: list[str] = []
            batch: list[torch.Tensor] = []
            size = 0
            for name, tensor in with_tied_head(named_tensors, self.tied_embeddings):
                t = tensor.detach().to("cpu", self.dtype).contiguous()
                names.append(name)
                batch.append(t)
                size += t.numel() * t.element_size()
                tensors += 1
                if size >= limit:
                    await self._send_chunk(version, names, batch, chunks)
                    chunks += 1
                    names, batch, size = [], [], 0
            if names:
                await self._send_chunk(version, names, batch, chunks)
                chunks += 1
            missing = (await self._rpc("distil_finish_update", version))[0]
            if missing:
                log.warning(
                    "weight update %d left %d parameters unchanged: %s", version, len(missing), missing[:8]
                )
            await self.llm.reset_prefix_cache()
        except BaseException as exc:
            raise EngineError(
                f"weight update to version {version} failed while loading ({type(exc).__name__}: {exc}); "
                f"the engine's weights are now inconsistent (it was at version {self.version}): resend the update"
            ) from exc
        finally:
            await self.llm.resume_generation()
        if tensors == 0:
            raise EngineError(f"weight update to version {version} carried no tensors")
        return tensors, chunks

    async def _send_chunk(
        self, version: int, names: list[str], batch: list[torch.Tensor], index: int
    ) -> None:
        if self.config.weight_transport == "rpc":
            await self._rpc("distil_load_chunk", version, names, [pack_tensor(t) for t in batch])
            return
        from safetensors.torch import save_file

        folder = self.config.weight_dir if os.path.isdir(self.config.weight_dir) else tempfile.gettempdir()
        path = os.path.join(folder, f"distil-weights-{os.getpid()}-{version}-{index}.safetensors")
        try:
            # Tied tensors share storage; safetensors wants each stored once.
            save_file(
                {
                    n: t.clone() if t.data_ptr() in _seen(batch, t) else t
                    for n, t in zip(names, batch, strict=True)
                },
                path,
            )
            await self._rpc("distil_load_file", version, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _verify(self, probe: Probe, version: int, previous: int) -> float:
        got = await self.score_tokens(probe.token_ids)
        want = np.asarray(probe.expected_logprobs, dtype=np.float32)
        error = float(np.mean(np.abs(got - want)))
        if not np.isfinite(error) or error > self.config.probe_tolerance:
            self.verified = False
            raise ProbeMismatch(
                f"probe mismatch after loading policy version {version} (the engine was at version "
                f"{previous}): mean |log-prob difference| {error:.4f} over {len(want)} tokens exceeds "
                f"probe_tolerance {self.config.probe_tolerance}. The engine does not run the weights "
                f"the learner published as version {version}; resend the update (or check that the "
                "probe was computed with those weights at temperature 1)",
                expected_version=version,
                engine_version=previous,
                error=error,
            )
        return error

    def expect_version(self, version: int) -> None:
        """The job's learner has published weights ``version`` already (this engine's replica
        was restarted while its job ran): serve nothing (``wait_verified`` waits) until the
        learner sends its weights again. Any version it sends is its current one."""
        if version > self.version:
            self.expected = version
            self.verified = False

    def unverified_reason(self) -> str:
        if self.expected:
            return (
                f"the engine runs weights version {self.version} but the job's weights were at version "
                f"{self.expected} when it started (a restarted replica); waiting for the learner to send them"
            )
        return f"the engine's weights (version {self.version}) failed verification"

    async def wait_verified(self, timeout_s: float) -> None:
        """Wait until the engine runs verified weights (after a failed update, until a good one;
        after ``expect_version``, until the learner sends its weights)."""
        deadline = time.monotonic() + timeout_s
        while not self.verified:
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"{self.unverified_reason()}, and no verified update arrived within {timeout_s:.0f}s; "
                    "the learner must resend the weights"
                )
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ lifetime

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.llm.shutdown()
            if self._adapter_root is not None:
                shutil.rmtree(self._adapter_root, ignore_errors=True)
            # Drop the engine now, while modules are alive: AsyncLLM.__del__ at interpreter
            # exit would otherwise call into half-torn-down modules.
            self.llm = None  # type: ignore[assignment]


def _seen(batch: list[torch.Tensor], t: torch.Tensor) -> set[int]:
    """Storage pointers of the tensors before ``t`` in ``batch`` (to copy shared ones)."""
    out = set()
    for other in batch:
        if other is t:
            break
        out.add(other.data_ptr())
    return out


def fit_prompt(ids: list[int], max_model_len: int, overlong: str) -> list[int]:
    """Leave room for at least one generated token: refuse an overlong prompt, or cut its start."""
    limit = max_model_len - 1
    if len(ids) <= limit:
        return ids
    if overlong == "truncate_left":
        return ids[len(ids) - limit :]
    raise PromptTooLong(
        f"prompt has {len(ids)} tokens but the context window is {max_model_len}; "
        "shorten it, raise max_model_len, or set overlong_prompt='truncate_left'"
    )


def with_tied_head(
    named_tensors: Iterable[tuple[str, torch.Tensor]], tied: bool
) -> Iterable[tuple[str, torch.Tensor]]:
    """Also send ``lm_head.weight`` when embeddings are tied and only the embedding came.

    A module's ``named_parameters()`` lists a tied weight once (as the embedding), but
    vLLM keeps the output head's own processed copy (pre-packed on CPU), which would
    otherwise keep serving the old weights.
    """
    saw_head = False
    embedding = None
    for name, tensor in named_tensors:
        if name == "lm_head.weight":
            saw_head = True
        elif name == "model.embed_tokens.weight":
            embedding = tensor
        yield name, tensor
    if tied and embedding is not None and not saw_head:
        yield "lm_head.weight", embedding


def _topk_from_prompt_logprobs(plp, start: int, n: int, k: int) -> TopK:
    """Rows start..n-1 of vLLM's flat prompt log-probs -> [T, k] arrays.

    Each position holds the actual token first (with its rank), then the top-k by rank.
    """
    rows = n - start
    ids = np.zeros((rows, k), dtype=np.int32)
    lps = np.full((rows, k), -np.inf, dtype=np.float32)
    tok = np.zeros(rows, dtype=np.float32)
    if plp is None or len(plp) != n:
        raise EngineError(
            f"vLLM returned prompt log-probs for {0 if plp is None else len(plp)} of {n} positions"
        )
    flat_ids, flat_lp, ranks = plp.token_ids, plp.logprobs, plp.ranks
    for r in range(rows):
        pos = start + r
        a, b = plp.start_indices[pos], plp.end_indices[pos]
        tok[r] = flat_lp[a]
        j = 0
        for e in range(a + 1, b):
            if j < k and ranks[e] is not None and ranks[e] == j + 1:
                ids[r, j] = flat_ids[e]
                lps[r, j] = flat_lp[e]
                j += 1
        if j != k:
            raise EngineError(f"vLLM returned {j} of the top-{k} log-probs at position {pos}")
    return TopK(ids=ids, logprobs=lps, token_logprobs=tok)
