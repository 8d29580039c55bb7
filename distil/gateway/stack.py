"""``distil up`` / ``distil down``: the whole stack on this machine in one foreground
process -- embedded Redis, a local Ray instance, Serve's HTTP proxy and the gateway
(which deploys each job's stage services). ``down`` signals that process and waits."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from distil.gateway.client import stack_file
from distil.paths import data_dir


def up(host: str, port: int, num_cpus: int | None, num_gpus: int | None, ready: threading.Event | None = None,
       stop: threading.Event | None = None, log=print) -> None:  # fmt: skip
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
    env = {"DISTIL_DATA_DIR": str(data_dir()), "REDIS_URL": redis_url}
    for k in ("DISTIL_API_TOKEN", "DISTIL_API_TOKEN_FILE", "VLLM_CPU_KVCACHE_SPACE", "HF_HOME", "PYTHONPATH"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app({"bus": {"url": redis_url}}), name="gateway", route_prefix="/")
    url = f"http://{host}:{port}"
    path.write_text(json.dumps({"pid": os.getpid(), "url": url, "redis": redis_url}))
    log(f"gateway {url}  (docs {url}/docs; token in {token_file()} or $DISTIL_API_TOKEN)")
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: stop.set())
        except ValueError:  # not the main thread (tests)
            pass
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
