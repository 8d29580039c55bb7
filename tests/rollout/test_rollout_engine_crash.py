"""A rollout replica whose vLLM engine-core process died reports itself unhealthy (so Serve
replaces it) within a bounded time, and requests fail at once instead of hanging.

The deployment's own class is built without Serve or Ray (``@serve.ingress`` wraps it in a
subclass whose constructor only Serve can call; the class it wraps is an ordinary one), on
a tiny real vLLM CPU engine whose engine-core child this test kills. It starts its own
engine because it kills it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import psutil
import pytest

pytestmark = pytest.mark.slow

UNHEALTHY_WITHIN_S = 30.0  # Serve's health_check_timeout_s for the rollout deployment


def plain_rollout_class():
    """The class ``@serve.deployment`` / ``@serve.ingress`` wrap: the user code, no Serve."""
    from services.rollout.deployment import RolloutDeployment

    wrapper = RolloutDeployment.func_or_class
    return next(k for k in wrapper.__mro__[1:] if "check_health" in vars(k))


def engine_cores(exclude: set[int]) -> list[psutil.Process]:
    """vLLM engine-core processes among this process's descendants, other than ``exclude``."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            title = p.name() + " " + " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if p.pid not in exclude and "EngineCore" in title:
            found.append(p)
    return found


def healthy(replica) -> bool:
    try:
        asyncio.run(replica.check_health())
    except Exception:
        return False
    return True


def test_killed_engine_core_makes_the_replica_unhealthy(vllm_tiny_dir):
    from fastapi import HTTPException
    from vllm.v1.engine.exceptions import EngineDeadError

    from distil.engine import SamplingConfig

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    config = {
        "engine": {
            "model": str(vllm_tiny_dir),
            "enforce_eager": True,
            "kv_cache_gib": 0.5,
            "max_model_len": 256,
            "max_num_seqs": 4,
            "max_logprobs": 5,
            "timeout_s": 60.0,  # a request stuck on the dead engine fails this test in bounded time
        },
        "sampling": {"n": 1, "max_tokens": 4},
    }
    replica = plain_rollout_class()(config)  # no job: no bus consumer, just the engine
    orphans: list[psutil.Process] = []
    try:
        assert asyncio.run(replica.health())["status"] == "ok"
        prompt, sampling = [5, 6, 7, 8], SamplingConfig(max_tokens=2, ignore_eos=True)
        assert len(replica.runner.generate(prompt, sampling)[0].token_ids) == 2

        cores = engine_cores(before)
        assert len(cores) == 1, f"expected one vLLM engine-core child of this engine, found {cores}"
        core = cores[0]
        orphans = core.children(recursive=True)  # its workers, if any: reaped below
        os.kill(core.pid, signal.SIGKILL)  # not reaped here: vLLM's monitor owns the child

        deadline = time.monotonic() + UNHEALTHY_WITHIN_S
        while healthy(replica):
            assert time.monotonic() < deadline, (
                f"check_health still passed {UNHEALTHY_WITHIN_S:.0f}s after the engine core (pid "
                f"{core.pid}) was killed; Serve would keep the dead replica"
            )
            time.sleep(0.2)
        with pytest.raises(EngineDeadError):
            asyncio.run(replica.check_health())
        with pytest.raises(HTTPException) as err:  # GET /health answers 503
            asyncio.run(replica.health())
        assert err.value.status_code == 503 and "unhealthy" in err.value.detail
        started = time.monotonic()
        with pytest.raises(EngineDeadError):
            replica.runner.generate(prompt, sampling)
        assert time.monotonic() - started < 10, "a request on the dead engine waited instead of failing"
    finally:
        replica.runner.close()
        for p in orphans:  # vLLM workers whose engine core was killed under them
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(orphans, timeout=30)
