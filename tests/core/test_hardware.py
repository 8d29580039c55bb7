"""dtype resolution from the hardware (injected capabilities) and detection on this machine."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from distil.hardware import Hardware, detect, learner_dtype, resolve_dtype

AVX2 = Hardware(
    cpu_model="AMD EPYC (Zen 3)", cpu_capability="AVX2", cpu_flags=frozenset({"avx2"}), onednn_bf16=False
)
AVX512_NO_BF16 = Hardware(
    cpu_model="Intel Skylake-SP",
    cpu_capability="AVX512",
    cpu_flags=frozenset({"avx2", "avx512f"}),
    onednn_bf16=True,
)
AVX512_BF16 = Hardware(
    cpu_model="Intel Cooper Lake",
    cpu_capability="AVX512",
    cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16"}),
    onednn_bf16=True,
)
AMX = Hardware(
    cpu_model="Intel Sapphire Rapids",
    cpu_capability="AVX512",
    cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16"}),
    onednn_bf16=True,
)
# An AMX CPU with torch and oneDNN forced down to AVX2 (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA)
AMX_FORCED_AVX2 = Hardware(
    cpu_model="Intel Sapphire Rapids", cpu_capability="AVX2", cpu_flags=AMX.cpu_flags, onednn_bf16=False
)
H100 = Hardware(cpu_capability="AVX2", cuda_name="NVIDIA H100", cuda_bf16=True)
V100 = Hardware(cpu_capability="AVX512", cuda_name="Tesla V100", cuda_bf16=False)


@pytest.mark.parametrize(
    ("hw", "device", "expected"),
    [
        (AVX2, "cpu", "float32"),
        (AVX512_NO_BF16, "cpu", "float32"),
        (AVX512_BF16, "cpu", "bfloat16"),
        (AMX, "cpu", "bfloat16"),
        (AMX_FORCED_AVX2, "cpu", "float32"),
        (H100, "cuda", "bfloat16"),
        (V100, "cuda", "float32"),
        (Hardware(), "cuda", "float32"),  # no CUDA device at all
    ],
)
def test_auto_is_bf16_only_where_native(hw, device, expected):
    assert resolve_dtype("auto", device, hw) == expected


def test_explicit_dtype_wins_and_warns_when_emulated(caplog):
    with caplog.at_level(logging.WARNING, logger="distil.hardware"):
        assert resolve_dtype("bfloat16", "cpu", AVX2, what="engine") == "bfloat16"
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "engine: bfloat16 on cpu is emulated" in msg and "AVX2" in msg and "float32" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="distil.hardware"):
        assert resolve_dtype("bfloat16", "cpu", AMX) == "bfloat16"
        assert resolve_dtype("float32", "cpu", AVX2) == "float32"
        assert resolve_dtype("float16", "cpu", AMX) == "float16"  # avx512_fp16: native
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="distil.hardware"):
        assert resolve_dtype("float16", "cpu", AVX512_BF16) == "float16"
    assert len(caplog.records) == 1


def test_learner_auto_is_fp32_on_cpu_and_bf16_on_a_bf16_gpu():
    assert learner_dtype("auto", "cpu", AMX) == "float32"
    assert learner_dtype("auto", "cuda", H100) == "bfloat16"
    assert learner_dtype("auto", "cuda", V100) == "float32"
    assert learner_dtype("bfloat16", "cpu", AMX) == "bfloat16"


def test_describe_names_model_capability_and_bf16():
    line = AMX_FORCED_AVX2.describe()
    assert "Sapphire Rapids" in line and "AVX2" in line and "no native bf16" in line
    assert "native bf16" in AMX.describe() and "no native" not in AMX.describe()


def _detect_in_subprocess(env: dict[str, str]) -> dict:
    code = "import json; from distil.hardware import detect; print(json.dumps(detect().summary()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_forcing_the_slow_kernels_is_seen_as_no_native_bf16():
    """On any machine: with torch and oneDNN forced down to AVX2 bf16 is not native, and the
    CPU's own flags are still reported."""
    native = _detect_in_subprocess({})
    forced = _detect_in_subprocess({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert forced["cpu_capability"] in ("AVX2", "DEFAULT")
    assert forced["cpu_native_bf16"] is False
    assert forced["avx512_bf16"] == native["avx512_bf16"]
    hw = detect()
    assert native["cpu_native_bf16"] == hw.cpu_native_bf16
    assert native["cpu_capability"] == hw.cpu_capability
    assert hw.cores >= 1 and hw.memory_gib > 0
