"""Model FLOPs utilisation of the learner's training step on one GPU (issue #6).

    python bench/gpu/mfu.py                  # one H200: Qwen3-1.7B shape, 8 x 4096 tokens per step
    python bench/gpu/mfu.py --smoke          # any machine, CPU included: a tiny shape, checks the script

The model is built from its config with random weights (nothing is downloaded) and trained
by the learner's own code: ``training_policy`` (bf16 autocast over fp32 master weights on a
single GPU rank), the chunked log-prob gather, the DistIL loss with future credit against a
top-20 teacher, AdamW, clipping and the EMA teacher update, exactly as a job runs them. A
plain SFT step in the same learner runs side by side (the overhead target of issue #6).

Model FLOPs per trained token, forward + backward (PaLM, appendix B):
``6 * N + 12 * L * d_attn * T`` with N the parameters used in matmuls (the input embedding
lookup excluded; a tied output head counted once), L layers, d_attn = heads x head_dim and T
the sequence length. Activation recomputation is not counted (MFU, not HFU). Peak: H200 dense
bf16, 989 TFLOP/s (``--peak-tflops`` to change). Goal: MFU >= 40%.

Writes a table, a final ratio line, and ``mfu.json`` into ``$OUT`` (the device runner's output
folder) or the current directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Qwen3-1.7B (config.json of Qwen/Qwen3-1.7B): the shape the issue asks for.
QWEN3_1_7B = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(QWEN3_1_7B, vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip


def preflight() -> None:
    missing = []
    for mod in ("torch", "transformers", "pydantic", "numpy"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise SystemExit(
            f"missing Python packages: {', '.join(missing)}. On a machine without network, carry wheels "
            "(see bench/gpu/README.md) and `pip install --no-index --find-links bench/gpu/wheels ...`"
        )


def matmul_params(cfg) -> int:
    """Parameters used in matmuls per token: attention, MLP and the output head."""
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    attn = d * q + 2 * d * kv + q * d
    mlp = 3 * d * cfg.intermediate_size
    return L * (attn + mlp) + d * cfg.vocab_size


def flops_per_token(cfg, seq_len: int) -> float:
    return (
        6.0 * matmul_params(cfg)
        + 12.0 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    )


def make_samples(n: int, prompt: int, response: int, vocab: int, k: int, seed: int):
    import numpy as np

    from services.learner.batching import TrainSample

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=(response, k)).astype(np.float32)
        p = np.exp(x) / np.exp(x).sum(-1, keepdims=True) * 0.9  # top-K mass 0.9, the rest in the tail
        out.append(
            TrainSample(
                prompt_ids=rng.integers(0, vocab, prompt),
                response_ids=rng.integers(0, vocab, response),
                rollout_logprobs=np.full(response, -2.0, np.float32),
                teacher_topk_ids=rng.choice(vocab, size=(response, k)).astype(np.int64),
                teacher_topk_logprobs=np.log(p).astype(np.float32),
                group_id=i // 4,
            )
        )
    return out


def run_case(args, shape: dict, objective: str, checkpointing: bool, device) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from distil.losses import ObjectiveConfig
    from services.learner.config import TrainConfig
    from services.learner.distributed import Topology
    from services.learner.policy import training_policy
    from services.learner.step import Learner

    cfg = Qwen3Config(**shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).float()  # fp32 master weights, as the learner loads them
    train = TrainConfig(token_budget=args.token_budget, activation_checkpointing=checkpointing, lr=1e-6)
    policy = training_policy(model, train, Topology())
    learner = Learner(policy, ObjectiveConfig(name=objective), train, pad_id=0)
    samples = make_samples(args.batch, args.prompt, args.response, cfg.vocab_size, args.topk, seed=1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        metrics = learner.step(samples, rewards=[float(j % 2) for j in range(len(samples))])
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    seq = args.prompt + args.response
    tokens = args.batch * seq  # every position runs forward and backward
    step_s = statistics.median(times)
    achieved = flops_per_token(cfg, seq) * tokens / step_s
    del learner, policy, model
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "objective": objective,
        "activation_checkpointing": checkpointing,
        "step_s": step_s,
        "steps_s": times,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step_s,
        "tflops": achieved / 1e12,
        "mfu": achieved / (args.peak_tflops * 1e12),
        "peak_mem_gib": peak_gb,
        "loss": metrics["loss"],
        "matmul_params_b": matmul_params(cfg) / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny shape and batch (any device): checks the script"
    )
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--response", type=int, default=3584, help="prompt + response = 4096 tokens by default")
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument(
        "--token-budget", type=int, default=8192, help="tokens per micro-batch (rows x longest row)"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H200 SXM)")
    ap.add_argument("--objectives", nargs="+", default=["distil", "sft"])
    ap.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    args = ap.parse_args()
    preflight()
    import torch

    shape = QWEN3_1_7B
    if args.smoke:
        shape = TINY
        args.batch, args.prompt, args.response, args.token_budget = 4, 16, 48, 128
        args.warmup, args.steps = 1, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none"
    print(f"# bench/gpu/mfu.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  device {gpu}  "
          f"torch {torch.__version__}  python {platform.python_version()}", flush=True)  # fmt: skip
    print(f"shape {'tiny (smoke)' if args.smoke else 'Qwen3-1.7B'}: {args.batch} x {args.prompt + args.response} "
          f"tokens per step, micro-batch budget {args.token_budget}, top-{args.topk} teacher", flush=True)  # fmt: skip
    rows = []
    for ckpt in args.checkpointing:
        for objective in args.objectives:
            try:
                row = run_case(args, shape, objective, ckpt == "on", device)
            except torch.OutOfMemoryError as exc:
                row = {
                    "objective": objective,
                    "activation_checkpointing": ckpt == "on",
                    "error": f"OOM: {exc}"[:200],
                }
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| objective | activation checkpointing | step s | tokens/s | TFLOP/s | MFU | peak GiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['objective']} | {r['activation_checkpointing']} | {r['error']} | | | | |")
            continue
        print(f"| {r['objective']} | {r['activation_checkpointing']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} "
              f"| {r['tflops']:.1f} | {100 * r['mfu']:.1f}% | {r['peak_mem_gib']:.1f} |")  # fmt: skip
    ok = [r for r in rows if "error" not in r]
    out = Path(os.environ.get("OUT", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "mfu.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    distil = [r for r in ok if r["objective"] == "distil"]
    if distil:
        best = max(distil, key=lambda r: r["mfu"])
        print(f"\nMFU of the DistIL step: {100 * best['mfu']:.1f}% (goal >= 40%; activation checkpointing "
              f"{'on' if best['activation_checkpointing'] else 'off'})")  # fmt: skip
    for ckpt in (False, True):
        pair = {r["objective"]: r for r in ok if r["activation_checkpointing"] == ckpt}
        if "distil" in pair and "sft" in pair:
            over = pair["distil"]["step_s"] / pair["sft"]["step_s"] - 1
            print(f"ratio: DistIL step / SFT step (checkpointing {'on' if ckpt else 'off'}) = "
                  f"{1 + over:.3f} (overhead {100 * over:+.1f}%, target <= 15%)")  # fmt: skip
    if not ok or any(not math.isfinite(r["loss"]) for r in ok):
        raise SystemExit("no case ran, or a loss was not finite")


if __name__ == "__main__":
    main()
