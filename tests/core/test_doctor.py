"""`distil doctor` reports what this machine runs each part in; forcing torch's and oneDNN's
AVX2 kernels makes it a CPU without native bf16, whose engines then run float32."""

from __future__ import annotations

import os
import subprocess
import sys

FORCED_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _doctor(extra_env: dict[str, str] | None) -> str:
    """`distil doctor --no-bench` with ``extra_env``, or in this process's own environment (None)."""
    env = (
        dict(os.environ)
        if extra_env is None
        else {k: v for k, v in os.environ.items() if k not in FORCED_AVX2}
    )
    env |= (extra_env or {}) | {"COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "distil.cli", "doctor", "--no-bench"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def _row(text: str, name: str) -> str:
    line = next(line for line in text.splitlines() if name in line)
    return line.split("│")[2].strip() if "│" in line else line


def test_doctor_on_forced_avx2_runs_every_engine_in_float32():
    text = _doctor(FORCED_AVX2)
    assert _row(text, "torch CPU capability") == "AVX2"
    assert _row(text, "native bf16 (CPU)").startswith("no")
    for part in ("rollout engine", "teacher engine", "learner compute"):
        assert _row(text, f"dtype: {part}") == "float32"
    assert _row(text, "sandbox isolation")  # says something: namespaces, process only, or why not


def test_doctor_matches_this_environments_hardware_detection():
    from distil.hardware import detect, resolve_dtype

    text = _doctor(None)  # the same environment as this process (forced kernels included)
    hw = detect()
    assert _row(text, "torch CPU capability") == hw.cpu_capability
    assert _row(text, "dtype: rollout engine") == resolve_dtype("auto", "cpu", hw)
    assert _row(text, "native bf16 (CPU)").startswith("yes" if hw.cpu_native_bf16 else "no")
