"""Teacher scoring throughput: the teacher service path (bus in -> contexts -> top-K scores ->
bus out) vs raw vLLM prompt log-probs on the same contexts and engine arguments, plus an
HF forward + top-k; and the latency of a verified in-place weight update of the 135M model.

    .venv/bin/python bench/teacher.py [--groups 4] [--g 4] [--k 20] [--compiled]

Contexts: HumanEval prompts; each response is the canonical solution's token ids and
carries a reference solution as feedback, so every response has a teacher signal.
Service path: feedback groups on a real Redis bus (embedded), consumed by the teacher
stage's concurrent consumer loop (the code a Serve replica runs) with a self-teacher on
an :class:`EngineRunner`; scored tokens = response tokens scored. Raw: one
``LLM.generate(prompt_logprobs=K, max_tokens=1)`` call over the same context token ids.
Weight update: full 135M state dict (fp32, HF names) -> engine, then the probe check;
the timer covers both. Both engines run at once, rounds alternate; best of ``--rounds``\nafter a warm-up round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from timing import BusStagePath, humaneval_rows, interleaved_rounds, machine, raw_llm, resolved_engine_dtype


def make_groups(job: str, rows: list[dict], g: int, tok):
    from distil.bus import Feedback, Group, Response

    groups = []
    for i, row in enumerate(rows):
        ids = np.asarray(tok.encode(row["canonical_solution"], add_special_tokens=False), dtype=np.int32)
        responses = [
            Response(
                token_ids=ids,
                logprobs=np.zeros(len(ids), np.float32),
                text=row["canonical_solution"],
                feedback=Feedback(feedback_text=f"Test {j} failed: assertion error in {row['entry_point']}."),
            )
            for j in range(g)
        ]
        groups.append(Group(job_id=job, group_id=f"g{i}", prompt_text=row["prompt"], responses=responses))
    return groups


def engine_kwargs(model: str, args) -> dict:
    return dict(
        model=model,
        dtype=args.dtype,
        max_model_len=2048,
        max_num_seqs=64,
        max_logprobs=args.k,
        kv_cache_gib=2.0,
        enforce_eager=not args.compiled,
        seed=0,
    )


class ServicePath(BusStagePath):
    """The teacher stage's consumer loop with a self-teacher on an EngineRunner, through the bus."""

    def __init__(self, model: str, rows, args) -> None:
        from distil.engine import EngineConfig
        from distil.engine.runner import EngineRunner
        from services.teacher.config import SelfEMATeacherConfig
        from services.teacher.context import teacher_context
        from services.teacher.self_teacher import SelfTeacher
        from services.teacher.stage import TeacherStage, score_items

        self.rows, self.args = rows, args
        runner = EngineRunner(EngineConfig(**engine_kwargs(model, args)))
        teacher = SelfTeacher(SelfEMATeacherConfig(top_k=args.k), runner=runner)
        super().__init__("teacher", runner, TeacherStage(teacher).handle, ("feedback", "teacher", "scored"))
        self.contexts = [
            teacher_context(self.runner.tokenizer, it, teacher.config)
            for g in make_groups("x", rows, args.g, self.runner.tokenizer)
            for it in score_items(g)
        ]

    def run(self, rnd: int) -> tuple[float, int]:
        groups = make_groups(self.job, self.rows, self.args.g, self.runner.tokenizer)
        for g in groups:
            g.group_id = f"r{rnd}-{g.group_id}"
        dt, got = self.round_trip(groups)
        assert all(r.teacher is not None for g in got for r in g.responses)
        return dt, sum(len(r.token_ids) for g in got for r in g.responses)

    def weight_updates(self, model: str, n: int):
        """Full 135M state dict (fp32, HF names, perturbed each time) + probe, as the learner sends it."""
        import torch
        from transformers import AutoModelForCausalLM

        from distil.engine import Probe

        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        probe_ids = self.runner.tokenizer.encode(
            "def add(a, b):\n    return a + b\n# tests\nassert add(1, 2) == 3"
        )
        out = []
        for v in range(1, n + 1):
            with torch.no_grad():
                for p in hf.parameters():
                    p.mul_(1 + 1e-3 * torch.randn_like(p))
                logits = hf(torch.tensor([probe_ids])).logits[0, :-1].float()
                lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(probe_ids[1:])[:, None])[:, 0]
            probe = Probe(tuple(probe_ids), tuple(lp.tolist()))
            weights = {k: p.detach() for k, p in hf.named_parameters()}
            t = time.perf_counter()
            res = self.runner.update_weights(weights, v, probe)
            out.append((time.perf_counter() - t, res))
        return out


class RawPath:
    """One ``LLM.generate(prompt_logprobs=K, max_tokens=1)`` call over the same contexts."""

    def __init__(self, model: str, contexts, args) -> None:
        from vllm import SamplingParams

        self.llm = raw_llm(engine_kwargs(model, args))
        self.params = SamplingParams(
            max_tokens=1, prompt_logprobs=args.k, detokenize=False, flat_logprobs=True
        )
        self.prompts = [{"prompt_token_ids": c.input_ids} for c in contexts]
        self.tokens = sum(len(c.input_ids) - c.response_start for c in contexts)

    def run(self) -> tuple[float, int]:
        t = time.perf_counter()
        self.llm.generate(self.prompts, self.params, use_tqdm=False)
        return time.perf_counter() - t, self.tokens


def bench_hf(model: str, contexts, args):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    sub = contexts[: max(1, len(contexts) // 4)]
    tokens = sum(len(c.input_ids) - c.response_start for c in sub)
    t = time.perf_counter()
    with torch.no_grad():
        for c in sub:
            logits = m(torch.tensor([c.input_ids])).logits[0, c.response_start - 1 : -1].float()
            torch.topk(torch.log_softmax(logits, -1), args.k, dim=-1)
    return tokens / (time.perf_counter() - t), tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--g", type=int, default=4, help="responses per group")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="engine dtype for both paths (auto: bf16 only where this CPU runs it natively)")  # fmt: skip
    p.add_argument("--compiled", action="store_true")
    args = p.parse_args()

    from distil.models import resolve_model

    model = str(resolve_model(args.model))
    rows = humaneval_rows(args.groups)
    print(
        f"model {args.model}; {args.groups} groups x {args.g} responses, top-{args.k}; "
        f"{'compiled' if args.compiled else 'enforce_eager'}; dtype {resolved_engine_dtype(args.dtype)}; {machine()}",
        flush=True,
    )
    svc_path = ServicePath(model, rows, args)
    contexts = svc_path.contexts
    raw_path = RawPath(model, contexts, args)
    (svc, svc_tok), (raw, raw_tok) = interleaved_rounds(
        svc_path.run, raw_path.run, args.rounds, raw_name="raw", unit="scored tok/s"
    )
    del raw_path
    updates = svc_path.weight_updates(model, args.updates)
    svc_path.close()
    hf, hf_tok = bench_hf(model, contexts, args)
    ctx_len = statistics.mean(len(c.input_ids) for c in contexts)

    print(f"\nteacher contexts: {len(contexts)}, mean length {ctx_len:.0f} tokens")
    print(f"{'path':46} {'scored tok/s':>13} {'tokens':>8}")
    print("-" * 70)
    print(f"{'teacher service (bus in -> bus out)':46} {svc:13.1f} {svc_tok:8d}")
    print(f"{'raw vLLM prompt_logprobs':46} {raw:13.1f} {raw_tok:8d}")
    print(f"{'HF forward + top-k, fp32':46} {hf:13.1f} {hf_tok:8d}")
    print(
        f"\n{'weight update (135M, fp32 HF names)':40} {'total s':>8} {'load s':>8} {'verify s':>9} {'probe err':>10}"
    )
    for dt, res in updates:
        print(
            f"{'version ' + str(res.version):40} {dt:8.2f} {res.load_s:8.2f} {res.verify_s:9.2f} {res.probe_error:10.4f}"
        )
    med = statistics.median(dt for dt, _ in updates)
    ratio = svc / raw
    print(
        f"\nratio: teacher service / raw vLLM prompt log-probs = {ratio:.2f} ({'meets' if ratio >= 0.9 else 'misses'} target 0.9)"
    )
    print(f"ratio: teacher service / HF forward+top-k = {svc / hf:.1f}x")
    print(
        f"weight update + verification, median of {len(updates)}: {med:.2f} s ({'meets' if med <= 2 else 'misses'} target 2 s)"
    )


if __name__ == "__main__":
    main()
