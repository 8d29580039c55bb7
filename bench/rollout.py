"""Rollout throughput: the rollout service path (bus in -> engine -> bus out) vs offline
``vllm.LLM.generate`` with the same engine arguments and prompts, plus HF ``generate``.

    .venv/bin/python bench/rollout.py [--prompts 4] [--n 8] [--max-tokens 128] [--compiled]

Service path: prompt groups are published on a real Redis bus (embedded), consumed by
the rollout stage's concurrent consumer loop (the code a Serve replica runs) on a
:class:`distil.engine.EngineRunner`, and the rollout groups read back; the clock runs
from the first publish to the last group read. Offline: one ``LLM.generate`` call with
all prompts (n samples each), the best a user can do with raw vLLM. Both sample with
sampled-token log-probs, ``ignore_eos`` (equal work), same seed. Both engines run at
once and rounds alternate between them; best of ``--rounds`` after a warm-up round.
"""

from __future__ import annotations

import argparse
import time

from timing import BusStagePath, humaneval_rows, interleaved_rounds, machine, raw_llm, resolved_engine_dtype

WORKDIR_MODEL = "smollm2-135m-instruct"


def humaneval_prompts(n: int) -> list[str]:
    return [f"Complete this Python function.\n\n{r['prompt']}" for r in humaneval_rows(n)]


def engine_args(model: str, args) -> dict:
    return dict(
        model=model,
        dtype=args.dtype,
        max_model_len=1024,
        max_num_seqs=64,
        max_logprobs=20,
        kv_cache_gib=2.0,
        enforce_eager=not args.compiled,
        seed=0,
    )


class ServicePath(BusStagePath):
    """The rollout stage's consumer loop on an EngineRunner, fed and drained through the bus."""

    def __init__(self, model: str, args) -> None:
        from distil.engine import EngineConfig, SamplingConfig
        from distil.engine.runner import EngineRunner
        from services.rollout.stage import RolloutStage

        t0 = time.perf_counter()
        runner = EngineRunner(EngineConfig(**engine_args(model, args)))
        self.start_s = time.perf_counter() - t0
        sampling = SamplingConfig(n=args.n, max_tokens=args.max_tokens, seed=1, ignore_eos=True)
        stage = RolloutStage(runner, sampling)
        super().__init__("rollout", runner, stage.handle, ("prompts", "rollout", "rollouts"))

    def run(self, prompts: list[str], rnd: int) -> tuple[float, int]:
        from distil.bus import Group

        groups = [
            Group(job_id=self.job, group_id=f"r{rnd}-g{i}", prompt_text=p) for i, p in enumerate(prompts)
        ]
        dt, got = self.round_trip(groups)
        return dt, sum(len(r.token_ids) for g in got for r in g.responses)


class OfflinePath:
    """One ``vllm.LLM.generate`` call over all prompts, same engine arguments."""

    def __init__(self, model: str, prompts: list[str], args) -> None:
        from transformers import AutoTokenizer
        from vllm import SamplingParams

        tok = AutoTokenizer.from_pretrained(model)
        ids = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}],
                add_generation_prompt=True,
                tokenize=True,
                enable_thinking=False,
            )
            for p in prompts
        ]
        self.ids = [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]
        t0 = time.perf_counter()
        self.llm = raw_llm(engine_args(model, args), logprobs_mode="processed_logprobs")
        self.start_s = time.perf_counter() - t0
        self.params = SamplingParams(
            n=args.n, max_tokens=args.max_tokens, seed=1, ignore_eos=True, logprobs=0
        )

    def run(self) -> tuple[float, int]:
        t = time.perf_counter()
        outs = self.llm.generate([{"prompt_token_ids": x} for x in self.ids], self.params, use_tqdm=False)
        dt = time.perf_counter() - t
        return dt, sum(len(c.token_ids) for o in outs for c in o.outputs)


def bench_hf(model: str, prompts: list[str], args) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompts[0]}],
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=False,
    )
    enc = tok([text] * args.n, return_tensors="pt")
    torch.manual_seed(1)
    t = time.perf_counter()
    with torch.no_grad():
        out = m.generate(
            **enc,
            do_sample=True,
            max_new_tokens=args.max_tokens,
            min_new_tokens=args.max_tokens,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tok.eos_token_id,
        )
    dt = time.perf_counter() - t
    tokens = (out.sequences.shape[1] - enc["input_ids"].shape[1]) * args.n
    return tokens / dt, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=WORKDIR_MODEL)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="engine dtype for both paths (auto: bf16 only where this CPU runs it natively)")  # fmt: skip
    p.add_argument("--compiled", action="store_true", help="let vLLM compile (slow start, faster steps)")
    p.add_argument("--skip-hf", action="store_true")
    args = p.parse_args()

    from distil.models import resolve_model

    model = str(resolve_model(args.model))
    prompts = humaneval_prompts(args.prompts)
    print(
        f"model {args.model}; {args.prompts} HumanEval prompts x n={args.n} x {args.max_tokens} tokens; "
        f"{'compiled' if args.compiled else 'enforce_eager'}; dtype {resolved_engine_dtype(args.dtype)}; {machine()}",
        flush=True,
    )
    svc_path = ServicePath(model, args)
    off_path = OfflinePath(model, prompts, args)
    (svc, svc_tok), (off, off_tok) = interleaved_rounds(
        lambda rnd: svc_path.run(prompts, rnd), off_path.run, args.rounds, raw_name="offline", unit="tok/s"
    )
    rows = [
        ("rollout service (bus in -> bus out)", svc, svc_tok, svc_path.start_s),
        ("offline vllm.LLM.generate", off, off_tok, off_path.start_s),
    ]
    svc_path.close()
    del off_path
    hf = None
    if not args.skip_hf:
        hf, hf_tok = bench_hf(model, prompts, args)
        rows.append((f"HF generate fp32 (1 prompt x n={args.n})", hf, hf_tok, float("nan")))

    print(f"\n{'path':44} {'tok/s':>9} {'tokens':>8} {'start s':>8}")
    print("-" * 72)
    for name, tps, tok, start in rows:
        print(f"{name:44} {tps:9.1f} {tok:8d} {start:8.1f}")
    ratio = svc / off
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"\nratio: rollout service / offline vLLM = {ratio:.2f} ({verdict} target 0.9)")
    if hf is not None:
        print(f"ratio: rollout service / HF generate = {svc / hf:.1f}x")


if __name__ == "__main__":
    main()
