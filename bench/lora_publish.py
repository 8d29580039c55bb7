"""Publishing a LoRA student: the adapter only vs the merged full weights, side by side in
one run, for SmolLM2-135M with the paper's Table 6 LoRA (r=64, alpha=128, all seven
attention and MLP projections).

    .venv/bin/python bench/lora_publish.py [--updates 3] [--model smollm2-135m-instruct]

The learner side is a peft LoRA student in fp32 whose adapters change before every
version (as after a training step). Each version is published both ways through the real
transport (``RayObjectStoreTransport``) to a vLLM CPU engine in a Ray actor, each with the
learner's probe, which the engine verifies:

* adapter: ``peft_adapter(model)`` (A/B + config, fp32) -> ``update_adapter`` on an engine
  started with ``engine.lora`` (max_rank 64): written as a PEFT directory, loaded as a
  vLLM LoRA adapter, previous adapter removed, prefix cache cleared, probe scored;
* merged: ``effective_weights(model)`` (base + scale*B@A, every parameter, fp32) ->
  ``update_weights`` on an engine without LoRA (today's full-weight path).

Both engines have the same arguments but ``lora`` and run in eager mode (vLLM's CPU build
turns graph compilation off whenever LoRA is enabled). Times: prepare = building the
payload in the learner; publish = ``transport.send`` (object store put, actor call, engine
load, probe check); load/verify = the engine's own split. Median over ``--updates``
after one untimed warm-up update of each kind.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def make_receiver_class():
    import ray

    @ray.remote(num_cpus=0)
    class Receiver:
        """A vLLM engine (with or without LoRA) taking the learner's updates."""

        def __init__(self, config: dict):
            from distil.engine.config import EngineConfig
            from distil.engine.runner import EngineRunner

            self.runner = EngineRunner(EngineConfig.model_validate(config))

        def _out(self, r) -> dict:
            return {
                "applied": r.applied,
                "load_s": r.load_s,
                "verify_s": r.verify_s,
                "probe_error": r.probe_error,
            }

        def update_weights(self, tensors, version, probe):
            return self._out(self.runner.update_weights(tensors.items(), version, probe))

        def update_adapter(self, adapter, version, probe):
            return self._out(self.runner.update_adapter(adapter, version, probe))

        def ready(self) -> bool:
            return True

        def close(self) -> None:
            self.runner.close()

    return Receiver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--updates", type=int, default=5)
    args = p.parse_args()

    import ray
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distil.models import resolve_model
    from services.learner.backend import PROBE_TEXT
    from services.learner.lora import LoraSettings, apply_lora, effective_weights, peft_adapter
    from services.learner.publish import RayObjectStoreTransport, WeightUpdate, make_probe

    model_dir = str(resolve_model(args.model))
    lora = LoraSettings()  # Table 6: r=64, alpha=128, q/k/v/o/gate/up/down
    print(
        f"model {args.model}; LoRA r={lora.r} alpha={lora.alpha} on {', '.join(lora.target_modules)}; "
        f"{platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _, student = apply_lora(base, lora)
    student.eval()
    probe_ids = AutoTokenizer.from_pretrained(model_dir).encode(PROBE_TEXT, add_special_tokens=False)

    engine = dict(model=model_dir, enforce_eager=True, kv_cache_gib=0.5, max_model_len=512, max_num_seqs=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    Receiver = make_receiver_class()
    lora_engine = Receiver.remote(engine | {"lora": {"max_rank": lora.r}})
    full_engine = Receiver.remote(engine)
    transport = RayObjectStoreTransport({"student": [lora_engine], "teacher": [full_engine]}, timeout_s=900)
    # 'teacher' is only the routing key of the second engine here: both get the student.
    rows: dict[str, list[dict]] = {"adapter": [], "merged": []}
    try:
        ray.get([lora_engine.ready.remote(), full_engine.ready.remote()], timeout=900)  # engines started
        for v in range(0, args.updates + 1):  # version 0 (not timed) warms both paths up
            with torch.no_grad():
                for n, prm in student.named_parameters():
                    if ".lora_B." in n:
                        prm.copy_(0.02 * torch.randn_like(prm))
            probe = make_probe(student, probe_ids)

            t = time.perf_counter()
            adapter = peft_adapter(student)
            prep = time.perf_counter() - t
            update = WeightUpdate.adapter("student", v + 1, adapter, probe)
            t = time.perf_counter()
            (res,) = transport.send(update)
            rows["adapter"].append(res | {"prepare_s": prep, "publish_s": time.perf_counter() - t,
                                          "bytes": update.nbytes, "tensors": len(update.tensors)})  # fmt: skip

            t = time.perf_counter()
            merged = effective_weights(student)
            prep = time.perf_counter() - t
            update = WeightUpdate("teacher", v + 1, merged, probe)
            t = time.perf_counter()
            (res,) = transport.send(update)
            rows["merged"].append(res | {"prepare_s": prep, "publish_s": time.perf_counter() - t,
                                         "bytes": update.nbytes, "tensors": len(update.tensors)})  # fmt: skip
            if v == 0:
                rows["adapter"].pop(), rows["merged"].pop()
                continue
            print(
                f"version {v + 1}: adapter {rows['adapter'][-1]['publish_s']:.2f} s, "
                f"merged {rows['merged'][-1]['publish_s']:.2f} s",
                flush=True,
            )
    finally:
        for e in (lora_engine, full_engine):
            ray.get(e.close.remote(), timeout=300)
        ray.shutdown()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[kind])

    print(f"\nmedian of {args.updates} verified updates (fp32 payloads; the engines load them in bf16)")
    head = f"{'payload':9} {'tensors':>8} {'MB sent':>8} {'prepare s':>10} {'publish s':>10} {'load s':>8} {'verify s':>9} {'probe err':>10}"
    print(head)
    print("-" * len(head))
    for kind in ("adapter", "merged"):
        r = rows[kind][0]
        err = max(x["probe_error"] for x in rows[kind])
        print(
            f"{kind:9} {r['tensors']:8d} {r['bytes'] / 1e6:8.1f} {med(kind, 'prepare_s'):10.3f} "
            f"{med(kind, 'publish_s'):10.2f} {med(kind, 'load_s'):8.2f} {med(kind, 'verify_s'):9.2f} {err:10.4f}"
        )
    b = rows["adapter"][0]["bytes"] / rows["merged"][0]["bytes"]
    tp = (med("adapter", "prepare_s") + med("adapter", "publish_s")) / (
        med("merged", "prepare_s") + med("merged", "publish_s")
    )
    assert all(np.isfinite(x["probe_error"]) for k in rows for x in rows[k])
    print(f"\nratio adapter / merged full weights: bytes {b:.3f}, time (prepare + publish) {tp:.2f}")


if __name__ == "__main__":
    main()
