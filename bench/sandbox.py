"""Sandbox throughput, side by side with a bare ``python3`` subprocess, in one run.

    .venv/bin/python bench/sandbox.py [--runs 300] [--slots 4]

1. sequential runs/s of a trivial program: sandbox vs bare subprocess (target ratio >= 0.5);
2. runs/s with ``--slots`` concurrent slots (target >= 100 runs/s on 2 cores);
3. at 2x cores concurrency, a program calibrated to 0.5 s of CPU is never timed out.
Prints a table and a final ratio line. Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.feedback.sandbox import SandboxConfig, make_sandbox  # noqa: E402

TRIVIAL = "pass\n"


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rate(fn, runs: int, workers: int) -> tuple[float, float]:
    """(runs/s, CPU ms per run of this process and every child it reaped)."""
    cpu, start = _cpu(), time.perf_counter()
    if workers == 1:
        for _ in range(runs):
            fn()
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda _: fn(), range(runs)))
    return runs / (time.perf_counter() - start), (_cpu() - cpu) / runs * 1000


LOOP = "import time\nt = time.process_time()\nn = 0\nwhile n < {loops}:\n    n += 1\nprint(time.process_time() - t)\n"


def calibrate(python: str, cpu_s: float) -> int:
    """Loop iterations that take ``cpu_s`` of CPU in a bare interpreter (fastest of 3)."""
    probe = 2_000_000
    spent = min(
        float(subprocess.run([python, "-c", LOOP.format(loops=probe)], capture_output=True, text=True).stdout)
        for _ in range(3)
    )
    return int(probe * cpu_s / spent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    sandbox = make_sandbox(SandboxConfig(slots=max(args.slots, 2 * cores), timeout_s=10))
    python = sandbox.runtime.python
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "trivial.py"
        script.write_text(TRIVIAL)

        def bare() -> None:
            subprocess.run(
                [python, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )

        def bare_nosite() -> None:
            subprocess.run(
                [python, "-S", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )

        def boxed() -> None:
            result = sandbox.run(TRIVIAL)
            if not result.ok:
                raise RuntimeError(result)

        for fn in (bare, boxed):  # warm up
            fn()
        rows = []
        bare_seq = rate(bare, args.runs, 1)
        box_seq = rate(boxed, args.runs, 1)
        rows.append(("trivial, sequential", bare_seq, box_seq))
        rows.append(("  vs bare with -S (no site)", rate(bare_nosite, args.runs, 1), box_seq))
        bare_conc = rate(bare, args.runs, args.slots)
        box_conc = rate(boxed, args.runs, args.slots)
        rows.append((f"trivial, {args.slots} concurrent", bare_conc, box_conc))

    loops = calibrate(python, 0.5)
    program = LOOP.format(loops=loops)
    workers = 2 * cores
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda _: sandbox.run(program, timeout_s=5), range(3 * workers)))
    timeouts = sum(r.status == "timeout" for r in results)
    not_ok = sum(not r.ok for r in results)
    cpu = sum(float(r.stdout) for r in results if r.ok) / max(len(results) - not_ok, 1)
    wall = max(r.wall_s for r in results)

    print(
        f"machine: {platform.machine()}, {cores} cores, {platform.platform()}, python {platform.python_version()}"
    )
    print(f"isolation: {sandbox.isolation.level}; load average before: {os.getloadavg()[0]:.2f}")
    print()
    print(
        f"| {'case':28s} | {'bare python3 runs/s':>19s} | {'sandbox runs/s':>14s} | {'ratio':>5s} "
        f"| {'bare CPU ms/run':>15s} | {'sandbox CPU ms/run':>18s} |"
    )
    print(f"|{'-' * 30}|{'-' * 21}|{'-' * 16}|{'-' * 7}|{'-' * 17}|{'-' * 20}|")
    for name, (b, bc), (s, sc) in rows:
        print(f"| {name:28s} | {b:19.1f} | {s:14.1f} | {s / b:5.2f} | {bc:15.1f} | {sc:18.1f} |")
    print()
    print(
        f"calibrated 0.5 s program x {len(results)} at {workers} concurrent (timeout 5 s): "
        f"{timeouts} timed out, {not_ok} not ok, mean loop CPU {cpu:.2f} s, max wall {wall:.2f} s"
    )
    capacity = cores * 1000 / box_conc[1]
    print(
        f"CPU-bound capacity of this machine if idle: {cores} cores / {box_conc[1]:.1f} ms per sandboxed run "
        f"= {capacity:.0f} runs/s"
    )
    print(
        f"ratio (sandbox/bare, sequential): {box_seq[0] / bare_seq[0]:.2f}  (target >= 0.5); "
        f"{args.slots} slots: {box_conc[0]:.1f} runs/s (target >= 100)"
    )


if __name__ == "__main__":
    main()
