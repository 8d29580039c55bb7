"""Kill a learner after a checkpoint with SIGKILL, resume in a new process: identical continuation."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from services.learner.checkpoint import CheckpointManager

STEPS = 4


def worker(*args, wait=True):
    cmd = [sys.executable, "-m", "tests.learner.resume_worker", *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    return p


@pytest.mark.slow
def test_kill_and_resume_continues_identically(tiny_model_dir, tmp_path):
    straight = tmp_path / "a"
    resumed = tmp_path / "b"
    worker("straight", tiny_model_dir, straight, STEPS, 0)
    p = worker("train", tiny_model_dir, resumed, STEPS, 2, wait=False)
    for line in p.stdout:  # wait for the announcement, then kill hard
        if "CHECKPOINTED" in line:
            break
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    manager = CheckpointManager(resumed / "ckpt", keep_last=2)
    assert [d.name for d in manager.list()] == ["step-00000001", "step-00000002"]
    worker("resume", tiny_model_dir, resumed, STEPS, 0)

    a = torch.load(straight / "straight.pt")
    b = torch.load(resumed / "resume.pt")
    assert sorted(b["losses"]) == [2, 3]  # the data cursor resumed after the checkpoint
    for i in (2, 3):
        assert b["losses"][i] == a["losses"][i]
    for name, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][name], w, rtol=0, atol=0)
    for name, w in a["ema"].items():
        torch.testing.assert_close(b["ema"][name], w, rtol=0, atol=0)
    torch.testing.assert_close(b["rand"], a["rand"])  # RNG state restored
    assert b["version"] == a["version"] == STEPS


def test_checkpoint_model_is_a_loadable_hf_directory(tiny_model_dir, tmp_path):
    from distil.losses import ObjectiveConfig
    from services.learner.checkpoint import Progress
    from services.learner.config import TrainConfig
    from services.learner.policy import PolicyLogprobs
    from services.learner.step import Learner
    from tests.learner.test_learner_step import samples

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    learner = Learner(PolicyLogprobs(model), ObjectiveConfig(), TrainConfig(lr=1e-3), pad_id=0)
    manager = CheckpointManager(tmp_path, keep_last=2, tokenizer_dir=tiny_model_dir)
    for _ in range(3):
        learner.step(samples(n=3))
        path = manager.save(learner, Progress(policy_version=learner.state.step))
    assert [d.name for d in manager.list()] == ["step-00000002", "step-00000003"]  # keep last 2
    assert manager.latest() == path
    loaded = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32)
    for name, p in model.named_parameters():
        torch.testing.assert_close(dict(loaded.named_parameters())[name], p.detach())
    assert (path / "model" / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
