"""Gateway API under load and fuzzing, on the real stack (local Ray, Serve, Redis, the
gateway deployment with its SQLite job store).

1. Status polling: an open-loop client sends GET /v1/jobs/{id} (alternating with
   GET /v1/jobs) at a fixed rate for a fixed time; reports p50/p95/p99/max latency and
   errors, side by side with Serve's own floor (GET /health: no auth, no store) at the
   same rate. Target: p99 < 50 ms, zero errors.
2. Schemathesis against the gateway's own OpenAPI (all operations, authenticated), with
   the not_a_server_error check: zero 5xx.

    .venv/bin/python bench/api.py [--rate 200] [--seconds 30] [--fuzz-examples 50]
        [--no-throughput-optimized] [--serve-env NAME=VALUE ...]

Serve runs in the mode ``distil up`` uses (:func:`distil.gateway.stack.serve_env`: the
throughput-optimized mode unless ``--no-throughput-optimized``); ``--serve-env`` overrides
single Serve variables on top, for experiments. The gateway runs with ``run_jobs=False``
so fuzzed submissions stay queued instead of deploying engines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def start_stack(data: Path, serve_vars: dict[str, str]):
    os.environ.update(serve_vars)  # as `distil up`: before Ray and Serve are imported
    import ray
    from ray import serve

    from distil.bus import EmbeddedRedis, EmbeddedRedisConfig
    from distil.gateway.deployment import build_app

    redis = EmbeddedRedis(EmbeddedRedisConfig(dir=data / "redis"))
    url = redis.start()
    env = {"DISTIL_DATA_DIR": str(data), "DISTIL_API_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", **serve_vars}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"bus": {"url": url}, "run_jobs": False}), name="gateway", route_prefix="/")
    return f"http://127.0.0.1:{port}", redis


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status


async def poll(base: str, paths: list[str], rate: float, seconds: float, auth: bool, conns: int = 32) -> dict:
    """Open loop: request i is due at start + i / rate; its latency is counted from then
    (so a slow server cannot hide queueing). A lean HTTP/1.1 keep-alive client, so the
    client's own CPU does not limit the rate on a small machine."""
    host, port = base.removeprefix("http://").split(":")
    auth_line = f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    n = int(rate * seconds)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            item = await queue.get()
            if item is None:
                writer.close()
                return
            i, due = item
            req = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: {host}\r\n{auth_line}\r\n".encode()
            try:
                writer.write(req)
                status = await asyncio.wait_for(_read_response(reader), 10)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
            latencies.append(time.perf_counter() - due)

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"requests": n, "achieved_rps": n / elapsed, "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
            "max": latencies[-1] * 1000, "errors": errors}  # fmt: skip


def fuzz(base: str, examples: int, workdir: Path) -> tuple[int, str]:
    cmd = [
        str(ROOT / ".venv/bin/schemathesis"), "run", f"{base}/openapi.json",
        "-H", f"Authorization: Bearer {TOKEN}",
        "--checks", "not_a_server_error",
        "--max-examples", str(examples),
        "--request-timeout", "10",
        "--exclude-path", "/v1/jobs/{job_id}/events",
        "--generation-deterministic",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=1800)
    return proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fuzz-examples", type=int, default=50)
    ap.add_argument("--no-fuzz", action="store_true")
    ap.add_argument(
        "--throughput-optimized",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Serve's mode as `distil up` sets it (default: throughput-optimized, like `distil up`)",
    )
    ap.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                    help="override one Serve variable on top of that mode (repeatable)")  # fmt: skip
    args = ap.parse_args()
    from distil.gateway.stack import serve_env

    serve_vars = serve_env(args.throughput_optimized)
    for item in args.serve_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("RAY_SERVE_"):
            ap.error(f"--serve-env {item!r}: expected RAY_SERVE_<NAME>=VALUE")
        serve_vars[name] = value
    data = Path(tempfile.mkdtemp(prefix="distil-bench-api-"))
    base, redis = start_stack(data, serve_vars)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            ids = [
                c.post("/v1/jobs", json={"name": f"bench-{i}", "steps": 10}).json()["id"] for i in range(20)
            ]
        status_paths = [f"/v1/jobs/{ids[i % len(ids)]}" for i in range(10)] + ["/v1/jobs?limit=20"]
        asyncio.run(poll(base, status_paths, args.rate, 3.0, True))  # warm-up
        floor = asyncio.run(poll(base, ["/health"], args.rate, args.seconds, False))
        status = asyncio.run(poll(base, status_paths, args.rate, args.seconds, True))
        print(f"# bench/api.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
              f"{os.cpu_count()} CPUs  load average {os.getloadavg()[0]:.1f} (other work on the box)  "
              f"python {sys.version.split()[0]}")  # fmt: skip
        mode = " ".join(f"{k}={v}" for k, v in serve_vars.items())
        print(
            f"open-loop {args.rate:.0f} req/s for {args.seconds:.0f} s through Serve's HTTP proxy ({mode})\n"
        )
        print("| endpoint | requests | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in (
            ("GET /health (Serve floor)", floor),
            ("GET /v1/jobs/{id}, /v1/jobs (auth + store)", status),
        ):
            print(f"| {name} | {r['requests']} | {r['achieved_rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                  f"{r['p99']:.1f} | {r['max']:.1f} | {sum(r['errors'].values())} {r['errors'] or ''} |")  # fmt: skip
        ok = status["p99"] < 50 and not status["errors"]
        print(f"\nstatus polling p99 {status['p99']:.1f} ms vs target 50 ms; p99 ratio to Serve floor "
              f"{status['p99'] / max(floor['p99'], 1e-9):.2f}x; {'PASS' if ok else 'FAIL'}")  # fmt: skip
        if not args.no_fuzz:
            rc, out = fuzz(base, args.fuzz_examples, data)
            tail = "\n".join(out.strip().splitlines()[-25:])
            print(f"\n## schemathesis (not_a_server_error, {args.fuzz_examples} examples per operation)\n")
            print(tail)
            print(f"\nschemathesis exit code {rc} ({'zero 5xx' if rc == 0 else 'FAILURES'})")
    finally:
        from ray import serve

        serve.shutdown()
        import ray

        ray.shutdown()
        redis.stop()


if __name__ == "__main__":
    main()
