"""What this machine can compute fast, and the one place every ``"auto"`` dtype is resolved.

bf16 is fast only where the hardware has it: CUDA devices with bf16 support, and CPUs with
AVX512_BF16 or AMX-BF16. Elsewhere torch and oneDNN emulate it: on an AVX2 CPU a bf16 matmul
ran at 0.9 GFLOPS against 65 GFLOPS in fp32, and ``make demo`` did not finish in an hour.
So ``"auto"`` means bf16 where it is native and float32 everywhere else; an explicit dtype
still wins, with a warning when this machine would emulate it.

The CPU's abilities are read from torch (``torch.backends.cpu.get_cpu_capability()``, which
honours ``ATEN_CPU_CAPABILITY``; oneDNN's bf16 support, which honours ``ONEDNN_MAX_CPU_ISA``)
and from the CPU's flags, so forcing the slow kernels on a fast CPU
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) is seen as a CPU without native bf16.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

DType = Literal["auto", "bfloat16", "float16", "float32"]
Resolved = Literal["bfloat16", "float16", "float32"]
Device = Literal["cpu", "cuda"]

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
# torch capabilities at which its CPU kernels use the wide vector units bf16 needs
_WIDE = frozenset({"AVX512", "AVX512_BF16", "AMX", "AVX512_VNNI"})


@dataclass(frozen=True)
class Hardware:
    """The facts the dtype choice and ``distil doctor`` need; build one by hand in tests."""

    cpu_model: str = "unknown"
    cpu_capability: str = "DEFAULT"  # torch.backends.cpu.get_cpu_capability()
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # of BF16_FLAGS | FP16_FLAGS | avx2/avx512f
    onednn_bf16: bool = False  # oneDNN can run bf16 at this ISA (honours ONEDNN_MAX_CPU_ISA)
    cores: int = 1
    memory_gib: float = 0.0
    cuda_name: str | None = None  # first CUDA device, None without one
    cuda_bf16: bool = False

    @property
    def cpu_native_bf16(self) -> bool:
        """bf16 runs on this CPU's own instructions (not emulated), at the ISA torch will use."""
        return bool(self.cpu_flags & BF16_FLAGS) and self.cpu_capability in _WIDE and self.onednn_bf16

    @property
    def cpu_native_fp16(self) -> bool:
        return bool(self.cpu_flags & FP16_FLAGS) and self.cpu_capability in _WIDE

    def native(self, dtype: Resolved, device: Device) -> bool:
        """Whether ``dtype`` runs natively on ``device`` of this machine."""
        if dtype == "float32":
            return True
        if device == "cuda":
            return self.cuda_name is not None and (dtype == "float16" or self.cuda_bf16)
        return self.cpu_native_bf16 if dtype == "bfloat16" else self.cpu_native_fp16

    def summary(self) -> dict[str, object]:
        return {
            "cpu": self.cpu_model,
            "cpu_capability": self.cpu_capability,
            "avx512_bf16": "avx512_bf16" in self.cpu_flags,
            "amx_bf16": "amx_bf16" in self.cpu_flags,
            "cpu_native_bf16": self.cpu_native_bf16,
            "cores": self.cores,
            "memory_gib": round(self.memory_gib, 1),
            "cuda": self.cuda_name,
            "cuda_bf16": self.cuda_bf16,
        }

    def describe(self) -> str:
        """One line for benchmark rows and logs: CPU model, torch capability, native bf16."""
        bf16 = "native bf16" if self.cpu_native_bf16 else "no native bf16"
        forced = [
            f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ
        ]
        gpu = f", GPU {self.cuda_name}" if self.cuda_name else ""
        tail = f" (forced: {' '.join(forced)})" if forced else ""
        return f"{self.cpu_model}, {self.cores} cores, {self.cpu_capability}, {bf16}{gpu}{tail}"


def _cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or "unknown", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", "x86_64"):
            model = value.strip()
        elif key == "flags" and not flags:
            wanted = BF16_FLAGS | FP16_FLAGS | {"avx2", "avx512f"}
            flags = frozenset(f for f in value.split() if f in wanted)
    return model, flags


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


@functools.cache
def detect() -> Hardware:
    """This machine (cached: the answer does not change within a process)."""
    import torch

    model, flags = _cpu_info()
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = False
    cuda_name, cuda_bf16 = None, False
    if torch.cuda.is_available():
        cuda_name = torch.cuda.get_device_name(0)
        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    return Hardware(
        cpu_model=model,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        cpu_flags=flags,
        onednn_bf16=onednn_bf16,
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        memory_gib=_memory_gib(),
        cuda_name=cuda_name,
        cuda_bf16=cuda_bf16,
    )


def resolve_dtype(
    requested: DType, device: Device, hw: Hardware | None = None, *, what: str = ""
) -> Resolved:
    """``"auto"``: bf16 where ``device`` runs it natively, else float32. An explicit dtype is
    returned as given, with a warning when this machine emulates it (``what`` names the part)."""
    hw = hw or detect()
    if requested == "auto":
        return "bfloat16" if hw.native("bfloat16", device) else "float32"
    if not hw.native(requested, device):
        log.warning(
            "%s%s on %s is emulated on this machine (%s): expect it to run many times slower than "
            "float32; use dtype 'auto' or 'float32'",
            f"{what}: " if what else "",
            requested,
            device,
            hw.describe(),
        )
    return requested


def torch_dtype(name: Resolved):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def learner_dtype(
    requested: Literal["auto", "bfloat16", "float32"], device: Device, hw: Hardware | None = None
) -> Resolved:
    """The learner's compute dtype over its fp32 master weights. ``"auto"``: bf16 on an
    accelerator that runs it natively, float32 on CPU (where the measured learning results
    are fp32, and where a CPU without native bf16 would emulate it)."""
    if requested == "auto" and device == "cpu":
        return "float32"
    return resolve_dtype(requested, device, hw, what="learner")
