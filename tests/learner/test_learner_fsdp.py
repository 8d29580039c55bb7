"""FSDP2 on 2 gloo ranks equals 1 rank on the same mini-batch (loss and updated weights)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, model_dir, out, steps: int = 2) -> dict:
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.learner.fsdp_worker",
                str(r),
                str(world),
                str(port),
                str(model_dir),
                str(out),
                str(steps),
            ],
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output.decode()[-3000:]
    return torch.load(out)


@pytest.mark.slow
def test_two_ranks_match_one_rank(tiny_model_dir, tmp_path):
    one = launch(1, tiny_model_dir, tmp_path / "one.pt")
    two = launch(2, tiny_model_dir, tmp_path / "two.pt")
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert a == pytest.approx(b, abs=1e-5, rel=1e-5)
    assert set(one["weights"]) == set(two["weights"])
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-5)
    for name, w in one["ema"].items():
        torch.testing.assert_close(two["ema"][name], w, rtol=1e-5, atol=1e-5)
