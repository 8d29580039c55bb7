"""Timing helpers shared by bench/rollout.py and bench/teacher.py: a stage's consumer loop
fed and drained through a real bus (the service path), the raw vLLM engine built from the
same engine arguments, and interleaved rounds of the two (both engines up at once, rounds
alternate, so load from other jobs on a shared box hits both paths alike; round 0 warms
up and the best later round counts)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import threading
import time
from collections.abc import Callable


def machine() -> str:
    """CPU model, cores, torch's CPU capability and native bf16 (every RESULTS.md row names
    them: a number holds only for the hardware it was measured on), and the load."""
    from distil.hardware import detect

    return f"{platform.node()}: {detect().describe()}, load average {os.getloadavg()[0]:.1f}"


def resolved_engine_dtype(requested: str) -> str:
    """What the engines of both paths run in (``--dtype``, ``auto`` resolved for this machine)."""
    from distil.engine.config import EngineConfig
    from distil.engine.engine import engine_dtype

    return engine_dtype(EngineConfig(model="-", dtype=requested))


def humaneval_rows(n: int) -> list[dict]:
    """The first ``n`` HumanEval problems as the package ships them."""
    from distil.data.humaneval import humaneval_path

    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f][:n]


class BusStagePath:
    """A stage's concurrent consumer loop (the code a Serve replica runs, started the way the
    deployments start it) on an engine runner, fed and drained through a real Redis bus.
    ``streams`` is (input stream, the stage's consumer group, output stream)."""

    def __init__(self, name: str, runner, handle, streams: tuple[str, str, str]) -> None:
        from distil.engine.bus_loop import LoopStats, start_consumer

        self.runner = runner
        self.job = f"bench-{name}-{os.getpid()}"
        self.source, _, output = streams
        self.stop = threading.Event()
        self.bus, self.thread = start_consumer(
            {"claim_idle_s": 600}, self.job, streams, handle, runner._loop, stop=self.stop,
            max_inflight=64, permanent=(ValueError,), stats=LoopStats(), name=f"bench-{name}",
        )  # fmt: skip
        self.reader = self.bus.consumer(self.job, output, group="bench")

    def round_trip(self, groups: list, timeout_s: float = 1800.0) -> tuple[float, list]:
        """Publish ``groups`` and read them all back: (seconds from the publish to the last
        read, the delivered groups)."""
        t = time.perf_counter()
        self.bus.producer(self.job, self.source).publish_many(groups)
        got: list = []
        deadline = time.monotonic() + timeout_s
        while len(got) < len(groups):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:.0f}s for {len(groups)} groups back, got {len(got)}")
            got += self.reader.read(count=len(groups) - len(got), block_s=0.5)
        dt = time.perf_counter() - t
        self.reader.ack(got)
        return dt, [d.group for d in got]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.bus.delete_job(self.job)
        self.bus.close()
        self.runner.close()


def raw_llm(engine: dict, **extra):
    """``vllm.LLM`` built from exactly the engine arguments the services' engines get
    (``distil.engine.engine._engine_args`` of the bench's :class:`EngineConfig`, e.g. chunked
    prefill off on CPU), with ``extra`` on top."""
    import dataclasses

    from vllm import LLM, EngineArgs

    from distil.engine.config import EngineConfig
    from distil.engine.engine import _engine_args

    args = _engine_args(EngineConfig(**engine))
    default = EngineArgs(model=args.model)
    kwargs = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(EngineArgs)
        if f.init and getattr(args, f.name) != getattr(default, f.name)
    }
    return LLM(**(kwargs | {"model": args.model} | extra))


Run = Callable[[], tuple[float, int]]


def interleaved_rounds(service: Callable[[int], tuple[float, int]], raw: Run, rounds: int, *,
                       raw_name: str, unit: str) -> tuple[tuple[float, int], tuple[float, int]]:  # fmt: skip
    """Alternate the two paths (each returns seconds and tokens) for a warm-up round and
    ``rounds`` more, printing each round; returns (best rate, tokens) of each path after the
    warm-up, service first."""
    best = [(0.0, 0), (0.0, 0)]
    for rnd in range(rounds + 1):
        results = [service(rnd), raw()]
        rates = [tokens / dt for dt, tokens in results]
        print(f"round {rnd}: service {rates[0]:.1f}, {raw_name} {rates[1]:.1f} {unit}", flush=True)
        if rnd > 0:
            best = [max(b, (r, tok)) for b, r, (_, tok) in zip(best, rates, results, strict=True)]
    return best[0], best[1]
