"""An :class:`Engine` on its own event-loop thread, callable from sync code and from other loops.

The bus consumers are blocking loops and the Serve replicas have their own event loop;
both reach the engine through this runner, so one engine serves all of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from distil.engine.adapter import LoraAdapter
from distil.engine.config import EngineConfig, SamplingConfig
from distil.engine.engine import Engine, Prompt
from distil.engine.errors import EngineTimeout
from distil.engine.types import Probe, Sample, TopK, UpdateResult

T = TypeVar("T")


class EngineRunner:
    """Starts an :class:`Engine` on a private event loop; ``close()`` shuts both down."""

    def __init__(self, config: EngineConfig, *, version: int = 0, start_timeout_s: float = 900.0) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="distil-engine-loop", daemon=True)
        self._thread.start()

        async def make() -> Engine:
            return Engine(config, version=version)

        try:
            self.engine: Engine = self._wait(
                make(), start_timeout_s, f"starting the engine for {config.model}"
            )
        except BaseException:
            self._stop_loop()
            raise

    # ------------------------------------------------------------------ plumbing

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the engine's loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    def _wait(self, coro: Awaitable[T], timeout_s: float, what: str) -> T:
        fut = self.submit(coro)
        try:
            return fut.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError as exc:
            fut.cancel()
            raise EngineTimeout(f"{what} did not finish within {timeout_s:.0f}s") from exc

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """From another event loop: ``await runner.call(runner.engine.generate, ...)``."""
        return await asyncio.wrap_future(self.submit(fn(*args, **kwargs)))

    # ------------------------------------------------------------------ sync API

    @property
    def version(self) -> int:
        return self.engine.version

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompt: Prompt, sampling: SamplingConfig, **kw: Any) -> list[Sample]:
        return self._wait(self.engine.generate(prompt, sampling, **kw), self.config.timeout_s, "generate")

    def generate_many(self, prompts: Sequence[Prompt], sampling: SamplingConfig) -> list[list[Sample]]:
        """All prompts at once, so the engine batches them continuously."""

        async def run():
            return await asyncio.gather(*(self.engine.generate(p, sampling) for p in prompts))

        return self._wait(run(), self.config.timeout_s, f"generating for {len(prompts)} prompts")

    def score_prompt_topk(self, input_ids: Sequence[int], start: int, k: int) -> TopK:
        return self._wait(
            self.engine.score_prompt_topk(input_ids, start, k), self.config.timeout_s, "scoring"
        )

    def score_many(self, items: Sequence[tuple[Sequence[int], int]], k: int) -> list[TopK]:
        async def run():
            return await asyncio.gather(*(self.engine.score_prompt_topk(ids, s, k) for ids, s in items))

        return self._wait(run(), self.config.timeout_s, f"scoring {len(items)} sequences")

    def score_tokens(self, input_ids: Sequence[int]):
        return self._wait(self.engine.score_tokens(input_ids), self.config.timeout_s, "scoring")

    def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int, probe: Probe | None = None
    ) -> UpdateResult:
        return self._wait(
            self.engine.update_weights(named_tensors, version, probe),
            self.config.timeout_s,
            f"updating weights to version {version}",
        )

    def update_adapter(self, adapter: LoraAdapter, version: int, probe: Probe | None = None) -> UpdateResult:
        return self._wait(
            self.engine.update_adapter(adapter, version, probe),
            self.config.timeout_s,
            f"updating the LoRA adapter to version {version}",
        )

    # ------------------------------------------------------------------ lifetime

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
            self.engine = None  # type: ignore[assignment]
        if self._thread.is_alive():
            self._stop_loop()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
