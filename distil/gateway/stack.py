"""``distil up`` / ``distil down``: the whole stack on this machine in one foreground
process -- embedded Redis, a local Ray instance, Serve's HTTP proxy and the gateway
(which deploys each job's stage services). ``down`` signals that process and waits.

Serve runs in its throughput-optimized mode by default (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``:
user code on each replica's event loop instead of a thread of its own, request-path logs
buffered and not copied to stderr, the garbage collector frozen after start), which
brings status polling under the API's p99 target (bench/RESULTS.md). Three parts of that
mode are turned back off:

- the request router stays on a loop of its own: the gateway's job drivers and the
  learner's weight pushes call deployment handles from plain threads, which a handle whose
  router runs on the replica's loop refuses ("No event loop running");
- no gRPC between deployments: it would send the object refs that carry weight updates in
  pickled messages capped at 4 MiB instead of Ray's own reference-counted calls;
- no direct ingress: every ingress replica would open an HTTP port of its own and stay up
  30 s at shutdown for external load balancers; Serve's proxy routes every request anyway.

Serve reads these variables when its modules are imported, in every process, so
:func:`up` sets them in this process before importing Ray and passes them to every Ray
worker through the runtime environment."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from distil.gateway.client import stack_file
from distil.paths import data_dir

SERVE_MODE_VAR = "RAY_SERVE_THROUGHPUT_OPTIMIZED"


def serve_env(throughput_optimized: bool) -> dict[str, str]:
    """The environment that selects Serve's mode, for the driver and every Ray worker."""
    if not throughput_optimized:
        return {SERVE_MODE_VAR: "0"}
    return {
        SERVE_MODE_VAR: "1",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    }


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (or a new event), set by SIGINT/SIGTERM when called from the main thread."""
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread (tests)
            pass
    return stop


def up(host: str, port: int, num_cpus: int | None, num_gpus: int | None, ready: threading.Event | None = None,
       stop: threading.Event | None = None, log=print, throughput_optimized: bool = True) -> None:  # fmt: skip
    mode = serve_env(throughput_optimized)
    os.environ.update(mode)  # before Ray and Serve are imported here (and inherited by the raylet)
    import ray
    from ray import serve

    from distil.bus import EmbeddedRedis
    from distil.gateway.auth import load_token, token_file
    from distil.gateway.deployment import build_app

    path = stack_file()
    if path.is_file():
        pid = json.loads(path.read_text()).get("pid")
        if pid and _alive(pid):
            raise RuntimeError(f"the stack is already up (pid {pid}); `distil down` stops it")
    load_token()  # create the token file before anything serves
    redis_url = os.environ.get("REDIS_URL")
    redis = None
    if not redis_url:
        redis = EmbeddedRedis()
        redis_url = redis.start()
    log(f"redis   {redis_url}")
    env = {"DISTIL_DATA_DIR": str(data_dir()), "REDIS_URL": redis_url, **mode}
    for k in ("DISTIL_API_TOKEN", "DISTIL_API_TOKEN_FILE", "VLLM_CPU_KVCACHE_SPACE", "HF_HOME", "PYTHONPATH"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app({"bus": {"url": redis_url}}), name="gateway", route_prefix="/")
    url = f"http://{host}:{port}"
    path.write_text(json.dumps({"pid": os.getpid(), "url": url, "redis": redis_url}))
    log(f"gateway {url}  (docs {url}/docs; token in {token_file()} or $DISTIL_API_TOKEN)")
    log(f"serve   {SERVE_MODE_VAR}={mode[SERVE_MODE_VAR]} (--no-throughput-optimized: Serve's defaults)")
    stop = stop_on_signals(stop)
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        log("stopping: serve, ray, redis")
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            if redis is not None:
                redis.stop()
            path.unlink(missing_ok=True)


def down(timeout_s: float = 120.0) -> bool:
    """Signal the ``distil up`` process; True once it has exited (False if none was running)."""
    path = stack_file()
    if not path.is_file():
        return False
    pid = json.loads(path.read_text()).get("pid")
    if not pid or not _alive(pid):
        path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for the stack (pid {pid}) to stop")
        time.sleep(0.5)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
