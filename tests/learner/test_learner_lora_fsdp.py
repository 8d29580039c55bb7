"""LoRA on 2 gloo FSDP2 ranks equals 1 rank: same losses and adapters, the published adapter
holds full (unsharded) tensors, the EMA teacher's merged weights match, and a checkpoint
written by 2 ranks resumes on 2 ranks to the same next-step loss."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.learner.test_learner_fsdp import free_port

TOL = {"rtol": 1e-5, "atol": 1e-5}


def launch(mode: str, world: int, model_dir, root, out) -> dict:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.learner.lora_fsdp_worker"]
            + [str(a) for a in (mode, rank, world, port, model_dir, root, out)],
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(world)
    ]
    for rank, p in enumerate(procs):
        try:
            output, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"LoRA {mode} rank {rank} of {world} did not finish within 300 s")
        assert p.returncode == 0, output.decode()[-3000:]
    return torch.load(out, weights_only=False)


def assert_same_tensors(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, w in want.items():
        assert type(got[name]) is torch.Tensor, f"{name} is a {type(got[name]).__name__}, not a full tensor"
        torch.testing.assert_close(got[name], w, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_two_lora_ranks_match_one_and_resume(tiny_model_dir, tmp_path):
    one = launch("train", 1, tiny_model_dir, tmp_path / "one", tmp_path / "one.pt")
    two = launch("train", 2, tiny_model_dir, tmp_path / "two", tmp_path / "two.pt")

    assert two["losses"] + [two["next_loss"]] == pytest.approx(
        one["losses"] + [one["next_loss"]], rel=1e-5, abs=1e-5
    )
    assert two["kinds"] == one["kinds"] == ("lora", "full")
    assert two["lora_config"] == one["lora_config"]
    # the published adapter: full A/B tensors, as 1 rank publishes them, and trained (B moved off 0)
    assert_same_tensors(two["adapter"], one["adapter"])
    assert any(".lora_B." in n and t.abs().max() > 0 for n, t in two["adapter"].items())
    assert_same_tensors(two["teacher"], one["teacher"])  # merged base + EMA(delta)
    for a, b in zip(two["probes"], one["probes"], strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert_same_tensors(two["params"], one["params"])  # after the third step
    assert_same_tensors(two["ema"], one["ema"])

    # the checkpoints: the same merged HF model and adapters as 1 rank writes
    for part in ("model/model.safetensors", "adapter.pt"):
        one_file, two_file = (Path(r["checkpoint"]) / part for r in (one, two))
        load = load_file if part.endswith(".safetensors") else partial(torch.load, weights_only=True)
        assert_same_tensors(load(two_file), load(one_file))

    # a checkpoint written by 2 ranks resumes on 2 ranks to the same next step
    resumed = launch("resume", 2, tiny_model_dir, tmp_path / "two", tmp_path / "resumed.pt")
    assert resumed["progress"].policy_version == 2
    assert resumed["next_loss"] == pytest.approx(two["next_loss"], rel=1e-5, abs=1e-5)
    assert_same_tensors(resumed["params"], two["params"])
    assert_same_tensors(resumed["ema"], two["ema"])
