"""``distil doctor``: what this machine is, what each part will run in, and how long the
demo should take here, from a ~20-second micro-benchmark of the demo model.

The demo's time is dominated by the learner's forward/backward (fp32 on CPU) and by the
engines' forward passes (rollout decoding, teacher scoring, the weight push's probe), in the
engines' dtype. The micro-benchmark times one of each on the 135M model with plain PyTorch
and scales the demo's step time measured on a reference machine by them
(``REFERENCE``); the estimate is good to a factor of about 1.5, enough to tell a 10-minute
demo from a 1-hour one before it starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from distil.hardware import Hardware, detect, learner_dtype, resolve_dtype

# The demo on the machine the estimate is calibrated on (bench/RESULTS.md, 2026-12-07: AMD EPYC,
# 2 cores, AVX512 with native bf16, engines bf16; job-20261207-232822-7318e1, 766 s in all): its
# micro-benchmark and the demo's measured times. Per step the learner (with the weight push
# after it) overlaps the next rollout, teacher scoring and feedback, so a step takes the longer
# of the two chains.
REFERENCE = {
    "learner_s": 2.55,  # micro-benchmark: one fp32 forward+backward
    "engine_s": 1.35,  # micro-benchmark: one engine round in the engines' dtype
    "learner": 34.3,  # busy s/step, steps 2-12 (python -m distil.timeline)
    "rollout": 9.1,
    "teacher": 8.8,
    "weight_push": 3.6,
    "feedback": 3.1,  # sandboxed tests: hardware-independent here
    "fixed_s": 172.0,  # stack and stage start-up, the doctor itself, the first step's warm-up
    "eval_s": 65.0,  # one held-out evaluation (17 problems x 8 samples)
}
DEMO_STEPS = 12


@dataclass(frozen=True)
class MicroBench:
    learner_s: float  # fp32 forward+backward of the demo model on one 384-token sequence
    engine_s: float  # engine-dtype forward passes: a 4x128 prefill and 16 cached decode steps
    fp32_gflops: float
    engine_gflops: float  # a 1024^2 matmul in the engines' dtype

    def _scale(self) -> tuple[float, float]:
        return self.learner_s / REFERENCE["learner_s"], self.engine_s / REFERENCE["engine_s"]

    def expected_step(self) -> float:
        ref, (lrn, eng) = REFERENCE, self._scale()
        push = ref["weight_push"] * eng
        return max(
            ref["learner"] * lrn + push, (ref["rollout"] + ref["teacher"]) * eng + ref["feedback"] + push
        )

    def eval_s(self) -> float:
        return REFERENCE["eval_s"] * self._scale()[1]

    def expected_demo(self, steps: int = DEMO_STEPS) -> tuple[float, float]:
        """(seconds per training step, seconds for the whole demo) on this machine."""
        step = self.expected_step()
        return step, REFERENCE["fixed_s"] + 2 * self.eval_s() + steps * step

    def expected_first(self) -> float:
        """Seconds from submission to the first progress: stages up, evaluation, first step."""
        return REFERENCE["fixed_s"] + self.eval_s() + self.expected_step()


def _matmul_gflops(dtype, seconds: float = 0.5) -> float:
    import torch

    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b
    n, t = 0, time.perf_counter()
    while (dt := time.perf_counter() - t) < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / dt / 1e9


def micro_benchmark(model: str = "smollm2-135m-instruct", hw: Hardware | None = None) -> MicroBench:
    """Time the demo's two kinds of work on ``model``; about 20 s on a 2-core CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from distil.hardware import torch_dtype
    from distil.models import resolve_model

    hw = hw or detect()
    engine = torch_dtype(resolve_dtype("auto", "cpu", hw))
    path = resolve_model(model)
    net = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 10000, (1, 384), generator=gen)

    def learner_step() -> float:
        t = time.perf_counter()
        net(input_ids=ids, labels=ids).loss.backward()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    learner_step()  # warm-up
    learner_s = min(learner_step() for _ in range(2))

    net = net.to(engine).eval()
    prompts = torch.randint(100, 10000, (4, 128), generator=gen)

    def engine_round() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            out = net(input_ids=prompts, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            for _ in range(16):
                out = net(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - t

    first = engine_round()  # warm-up; an emulated dtype is slow enough that one round says it
    engine_s = first if first > 10 else min(engine_round() for _ in range(2))
    return MicroBench(learner_s, engine_s, _matmul_gflops(torch.float32), _matmul_gflops(engine))


def parts(hw: Hardware | None = None) -> dict[str, str]:
    """The dtype each part resolves ``"auto"`` to on this machine."""
    hw = hw or detect()
    device = "cuda" if hw.cuda_name else "cpu"
    engines = resolve_dtype("auto", device, hw)
    return {
        "rollout engine": engines,
        "teacher engine": engines,
        "evaluation (rollout engine)": engines,
        "learner compute": learner_dtype("auto", device, hw),
        "weight push": f"{engines} (the receiving engines' dtype)",
    }


def sandbox_isolation() -> str:
    try:
        from services.feedback.sandbox import SandboxConfig, make_sandbox

        iso = make_sandbox(SandboxConfig(slots=1)).isolation
    except Exception as exc:  # a missing backend is what the user needs to see, not a crash
        return f"unavailable ({exc})"
    if iso.level == "namespaces":
        return f"namespaces ({', '.join(iso.namespaces)}; network {'on' if iso.network else 'off'})"
    return "process only (no namespace isolation: bubblewrap or user namespaces unavailable)"


def report(bench: MicroBench | None, hw: Hardware | None = None) -> list[tuple[str, str]]:
    """The rows ``distil doctor`` and the demo print."""
    hw = hw or detect()
    rows: list[tuple[str, str]] = [
        ("CPU", hw.cpu_model),
        ("torch CPU capability", hw.cpu_capability),
        ("avx512_bf16 / amx_bf16 flags", f"{'avx512_bf16' in hw.cpu_flags} / {'amx_bf16' in hw.cpu_flags}"),
        ("native bf16 (CPU)", "yes" if hw.cpu_native_bf16 else "no: bf16 would be emulated"),
        ("GPU", hw.cuda_name or "none"),
        ("cores / memory", f"{hw.cores} / {hw.memory_gib:.1f} GiB"),
    ]
    rows += [(f"dtype: {k}", v) for k, v in parts(hw).items()]
    rows.append(("sandbox isolation", sandbox_isolation()))
    if bench is not None:
        step, total = bench.expected_demo()
        rows += [
            ("matmul fp32 / engine dtype", f"{bench.fp32_gflops:.0f} / {bench.engine_gflops:.0f} GFLOPS"),
            ("micro-benchmark learner / engine", f"{bench.learner_s:.2f} s / {bench.engine_s:.2f} s"),
            ("expected demo", f"{step:.0f} s per step, about {total / 60:.0f} min for {DEMO_STEPS} steps"),
        ]
    return rows


def print_report(console: Any, bench: MicroBench | None, hw: Hardware | None = None) -> None:
    from rich.table import Table

    table = Table(title="distil doctor", show_header=False)
    table.add_column("what")
    table.add_column("this machine")
    for k, v in report(bench, hw):
        table.add_row(k, v)
    console.print(table)
