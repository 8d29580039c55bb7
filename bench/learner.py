"""Learner benchmarks, side by side in one run on the same model, batch and machine.

1. Step tokens/s: our DistIL (and SDPO, SFT) step vs TRL's SDPO trainer compute path
   (trl.experimental.sdpo: student forward with ``logits_to_keep``, its top-K+tail loss,
   IS clipping, backward, clip, AdamW, and the EMA teacher sync its trainer runs after every
   step: TRL's own SyncRefModelCallback at teacher_update_rate 0.05). The teacher's distribution is given to both sides
   precomputed (in distil it comes from the teacher service as top-K; TRL's trainer takes
   full teacher logits), so both do the same learner work.
2. DistIL step overhead vs a plain SFT step in our learner (target <= 15%).
3. Peak memory of the loss path (hidden states -> log-probs -> DistIL loss -> backward) at
   T = 4096 with the 49k vocabulary: our chunked gather vs naive full logits.

Run: .venv/bin/python bench/learner.py [--model smollm2-135m-instruct] [--repeats 3]
Needs `trl` (pip install trl==1.16.0) for the TRL column.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from distil.losses import ObjectiveConfig
from distil.models import resolve_model
from services.learner.batching import TrainSample
from services.learner.config import TrainConfig
from services.learner.distributed import Topology
from services.learner.policy import training_policy
from services.learner.step import Learner

K = 20


def make_batch(model, n: int, prompt_len: int, resp_len: int, seed: int = 0):
    """Samples with teacher top-K taken from the model itself on a perturbed context."""
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    prompts = torch.randint(0, V, (n, prompt_len), generator=g)
    resps = torch.randint(0, V, (n, resp_len), generator=g)
    with torch.no_grad():
        ids = torch.cat([prompts, resps], 1)
        teacher_logits = model(ids).logits[:, prompt_len - 1 : -1].float() * 1.3  # a sharper "teacher"
    t_lp = torch.log_softmax(teacher_logits, -1)
    top_lp, top_ids = t_lp.topk(K, -1)
    samples = [
        TrainSample(
            prompt_ids=prompts[i].numpy(),
            response_ids=resps[i].numpy(),
            rollout_logprobs=np.full(resp_len, -3.0, dtype=np.float32),
            teacher_topk_ids=top_ids[i].numpy(),
            teacher_topk_logprobs=top_lp[i].numpy(),
            group_id=i // 4,
        )
        for i in range(n)
    ]
    return samples, prompts, resps, teacher_logits


def ours_step(model_dir, name, samples):
    train = TrainConfig(lr=1e-6)
    # The policy exactly as a learner rank builds it from the config (the CPU path: fp32).
    policy = training_policy(_load(model_dir), train, Topology())
    learner = Learner(policy, ObjectiveConfig(name=name), train, pad_id=0)
    rewards = [float(j % 2) for j in range(len(samples))]
    return lambda: learner.step(samples, rewards=rewards)


def trl_step(model_dir, prompts, resps, teacher_logits, old_logps):
    from trl.experimental.sdpo.loss_utils import (
        apply_importance_sampling_clipping,
        compute_topk_self_distillation_loss,
    )
    from trl.trainer.callbacks import SyncRefModelCallback
    from trl.trainer.utils import selective_log_softmax

    model = _load(model_dir)
    # TRL's SDPO trainer keeps an EMA teacher (teacher_model_kind="ema", teacher_update_rate
    # 0.05) synced after every step by SyncRefModelCallback; our learner updates its EMA
    # teacher every step too, so the same work is timed on both sides.
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    ids = torch.cat([prompts, resps], 1)
    mask = torch.ones_like(ids)
    T = resps.shape[1]

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=T + 1).logits
        student_logits = logits[:, :-1, :][:, -T:, :]
        per_token = compute_topk_self_distillation_loss(
            student_logits,
            teacher_logits,
            distillation_topk=K,
            distillation_alpha=1.0,
            distillation_add_tail=True,
        )
        student_logps = selective_log_softmax(student_logits, resps)
        per_token = apply_importance_sampling_clipping(per_token, student_logps, old_logps, 2.0)
        loss = per_token.mean(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        SyncRefModelCallback._sync_target_model(model, teacher, 0.05)

    return step


def time_interleaved(steps: dict, repeats: int) -> dict[str, float]:
    """One warm-up step each, then ``repeats`` rounds of one step per path, round robin, so
    that load from other processes hits every path alike. Median per path."""
    for fn in steps.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


# ------------------------------------------------------------------ memory (subprocess)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(mode: str, model_dir: str, T: int) -> None:
    from safetensors import safe_open

    from distil.losses import LossBatch, compute_loss, compute_loss_from_logprobs
    from distil.losses.support import chunked_student_logprobs

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:  # tied: lm_head = embed_tokens
        W = f.get_tensor("model.embed_tokens.weight").float().requires_grad_()
    V, H = W.shape
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, T, H, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (1, T), generator=g)
    t_ids = torch.randint(0, V, (1, T, K), generator=g)
    t_lp = torch.log_softmax(torch.randn(1, T, K, generator=g), -1) - 3.0
    batch = LossBatch(ids, torch.ones(1, T, dtype=torch.bool), t_ids, t_lp)
    # The peak RSS is inherited across fork/exec, so reset it here and measure from now.
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    cfg = ObjectiveConfig()
    if mode == "naive":
        out = compute_loss(cfg, hidden @ W.T, batch)
    else:
        out = compute_loss_from_logprobs(
            cfg, chunked_student_logprobs(hidden, W, ids, t_ids, chunk_size=1024), batch
        )
    out.loss.backward()
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_mb": (peak - base) / 1024, "loss": float(out.loss.detach())}))


def measure_memory(model_dir, T: int) -> dict[str, float]:
    out = {}
    for mode in ("naive", "chunked"):
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", mode, "--model-dir", str(model_dir), "--T", str(T)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--resp-len", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--memory-child")
    ap.add_argument("--model-dir")
    args = ap.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.model_dir, args.T)
        return
    console = Console()
    model_dir = resolve_model(args.model)
    model = _load(model_dir)
    samples, prompts, resps, teacher_logits = make_batch(model, args.samples, args.prompt_len, args.resp_len)
    del model
    old = torch.full(resps.shape, -3.0)
    tokens = resps.numel()
    console.print(
        f"model {args.model}, {args.samples} x ({args.prompt_len} prompt + {args.resp_len} response) tokens, K={K}"
    )
    steps = {}
    try:
        steps["TRL SDPO trainer path (reverse KL, top-20+tail, EMA teacher)"] = trl_step(
            model_dir, prompts, resps, teacher_logits, old
        )
    except ImportError:
        console.print("[yellow]trl not installed: skipping the TRL column (pip install trl==1.16.0)[/]")
    for name in ("distil", "sdpo", "sft"):
        steps[f"distil learner, objective={name}"] = ours_step(model_dir, name, samples)
    rows = time_interleaved(steps, args.repeats)
    table = Table(title="learner step (median, round robin after one warm-up step each)")
    table.add_column("path")
    table.add_column("step s", justify="right")
    table.add_column("response tokens/s", justify="right")
    for k, v in rows.items():
        table.add_row(k, f"{v:.3f}", f"{tokens / v:.1f}")
    console.print(table)
    mem = measure_memory(model_dir, args.T)
    mt = Table(title=f"peak memory of the loss path, T={args.T}, V=49152 (RSS growth)")
    mt.add_column("path")
    mt.add_column("peak MB", justify="right")
    mt.add_column("loss", justify="right")
    for k, v in mem.items():
        mt.add_row(k, f"{v['peak_mb']:.0f}", f"{v['loss']:.5f}")
    console.print(mt)
    distil_t = rows["distil learner, objective=distil"]
    sft_t = rows["distil learner, objective=sft"]
    trl_key = "TRL SDPO trainer path (reverse KL, top-20+tail, EMA teacher)"
    if trl_key in rows:
        console.print(
            f"ratio distil-step tokens/s / TRL-SDPO tokens/s = {rows[trl_key] / distil_t:.2f} (target >= 1.0)"
        )
    console.print(f"distil step overhead vs SFT step = {100 * (distil_t / sft_t - 1):.1f}% (target <= 15%)")
    console.print(
        f"ratio naive / chunked peak memory = {mem['naive']['peak_mb'] / max(mem['chunked']['peak_mb'], 1):.2f}"
    )


if __name__ == "__main__":
    main()
