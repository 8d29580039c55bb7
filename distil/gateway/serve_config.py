"""``distil serve --config FILE``: the whole stack from one placement file (deploy/serve/).

The file is a Ray Serve config file (the schema of ``serve deploy`` and of KubeRay's
``serveConfigV2``: ``http_options``, ``applications: [{name, route_prefix, import_path,
args, deployments}]``) plus a ``distil:`` section that Ray ignores:

    distil:
      ray: {address, num_cpus, num_gpus, include_dashboard, metrics_export_port, env}
      redis: {url}                    # None = $REDIS_URL, else an embedded server
      gpu_budget: {gpu_memory_gib, learner_gib_per_rank}   # checked when stages share a GPU
      ready_timeout_s: 300

One application is the gateway (``distil.gateway.deployment:build_app``); its ``args`` are
a ``GatewayConfig`` whose ``job_defaults`` (placement, engine settings) lie under every
submitted job spec. ``load`` validates all of it and says where a problem is; ``serve``
starts or joins Ray, uses the external Redis or an embedded one, deploys the applications
the way ``serve deploy`` does, and blocks until stopped.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

GATEWAY_IMPORT = "distil.gateway.deployment:build_app"
# Passed on to every Ray worker when set here (tokens, caches, vLLM's CPU KV space).
PASS_ENV = ("DISTIL_API_TOKEN", "DISTIL_API_TOKEN_FILE", "HF_HOME", "HF_TOKEN", "VLLM_CPU_KVCACHE_SPACE")


class ServeConfigError(ValueError):
    """An invalid placement file; the message names the file and each field that is wrong."""


class RaySection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None,
        description="an existing cluster ('ray://...' or 'auto'); None = $RAY_ADDRESS, else start one here",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPU slots of a Ray started here; None = all cores"
    )
    num_gpus: int | None = Field(
        default=None, ge=0, description="GPUs of a Ray started here; None = all visible"
    )
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    metrics_export_port: int | None = Field(
        default=None, ge=1, le=65535, description="Ray's own Prometheus metrics (deploy/prometheus.yml: 8080)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment of every Ray worker")
    throughput_optimized: bool = Field(
        default=True,
        description="Serve's throughput-optimized mode as `distil up` runs it (distil.gateway.stack.serve_env); "
        "`env` overrides single variables",
    )


class RedisSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None, description="None = $REDIS_URL, else an embedded server in <data_dir>/redis"
    )


class GpuBudget(BaseModel):
    """Memory of one GPU and what a training rank needs on it: checked when stages share a GPU."""

    model_config = ConfigDict(extra="forbid")

    gpu_memory_gib: float = Field(gt=0, description="memory of one GPU as CUDA reports it (H200: 140 GiB)")
    learner_gib_per_rank: float = Field(
        ge=0,
        description="one training rank: fp32 weights, gradients, AdamW moments, EMA teacher, activations",
    )


class DistilSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ray: RaySection = Field(default_factory=RaySection)
    redis: RedisSection = Field(default_factory=RedisSection)
    gpu_budget: GpuBudget | None = None
    ready_timeout_s: float = Field(default=300.0, gt=0, description="for the gateway application to run")


class ServeFile(BaseModel):
    """A loaded placement file: the Ray Serve part as Ray validated it, and ours."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    serve: dict[str, Any] = Field(description="the Ray Serve config (without the distil section)")
    distil: DistilSection
    gateway_index: int
    gateway: Any = Field(description="the gateway application's args as a GatewayConfig")


def _errors(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{prefix}{'.' if prefix and loc else ''}{loc}: {err['msg']}")
    return out


def load(path: str | Path) -> ServeFile:
    """Read and validate a placement file; ServeConfigError lists every problem with its field path."""
    from ray.serve.schema import ServeDeploySchema

    from distil.gateway.deployment import GatewayConfig

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServeConfigError(f"{path}: no such file (the configs are in deploy/serve/)") from None
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{path}: a placement file is a mapping (Ray Serve config + a distil section)")
    raw = dict(raw)
    problems: list[str] = []
    try:
        distil = DistilSection.model_validate(raw.pop("distil", None) or {})
    except ValidationError as exc:
        problems += _errors(exc, "distil")
        distil = None
    unknown = sorted(set(raw) - set(ServeDeploySchema.model_fields))
    problems += [
        f"{k}: not a Ray Serve config field (known: {', '.join(ServeDeploySchema.model_fields)})"
        for k in unknown
    ]
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ServeConfigError(f"{path}:\n  " + "\n  ".join(problems + _errors(exc, ""))) from None
    gateways = [i for i, app in enumerate(schema.applications) if app.import_path == GATEWAY_IMPORT]
    if len(gateways) != 1:
        problems.append(
            f"applications: exactly one must have import_path {GATEWAY_IMPORT} (found {len(gateways)})"
        )
    gateway = None
    for i, app in enumerate(schema.applications):
        try:
            import_attr(app.import_path)
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append(f"applications.{i}.import_path: cannot import {app.import_path!r}: {exc}")
        if i in gateways:
            try:
                gateway = GatewayConfig.model_validate(app.args or {})
            except ValidationError as exc:
                problems += _errors(exc, f"applications.{i}.args")
    if distil is not None and gateway is not None:
        problems += placement_problems(gateway.job_defaults, distil, f"applications.{gateways[0]}.args")
    if problems:
        raise ServeConfigError(f"{path}:\n  " + "\n  ".join(problems))
    return ServeFile(path=path, serve=raw, distil=distil, gateway_index=gateways[0], gateway=gateway)


def import_attr(import_path: str):
    """``module.sub:attr`` (Ray Serve's import path) -> the object."""
    module, sep, attr = import_path.partition(":")
    if not sep or not module or not attr:
        raise ValueError("expected 'module.path:attribute'")
    return getattr(importlib.import_module(module), attr)


def placement_problems(job_defaults: dict[str, Any], distil: DistilSection, at: str = "args") -> list[str]:
    """Whether the stages of one job, placed as the job defaults say, fit the machine declared
    here: GPUs reserved vs ``ray.num_gpus``, and on a shared GPU the vLLM memory fractions plus
    the learner's budget vs the GPU's memory."""
    from distil.gateway.spec import validate_spec

    spec, typed = validate_spec(job_defaults)
    place = spec.placement
    self_teacher = typed.teacher.kind in ("self_ema", "self_frozen")
    teacher_engine = (typed.teacher.engine or typed.engine) if self_teacher else None
    learner = place.learner_gpus * place.learner_gpus_per_rank
    reserved = (
        place.rollout_gpus * place.rollout_replicas + place.teacher_gpus * place.teacher_replicas + learner
    )
    where = f"{at}.job_defaults.placement"
    out = []
    gpus = distil.ray.num_gpus
    if gpus is not None and reserved > gpus + 1e-9:
        out.append(f"{where}: one job reserves {reserved:g} GPUs but distil.ray.num_gpus is {gpus}")
    shared = {
        "rollout": 0 < place.rollout_gpus < 1,
        "teacher": 0 < place.teacher_gpus < 1 and teacher_engine is not None,
        "learner": place.learner_gpus > 0 and place.learner_gpus_per_rank < 1,
    }
    if not any(shared.values()):
        return out
    budget = distil.gpu_budget
    if budget is None:
        return out + [
            f"{where}: stages share a GPU (placement below 1); set distil.gpu_budget to check they fit"
        ]
    parts = {}
    if shared["rollout"]:
        parts["rollout vLLM"] = typed.engine.gpu_memory_utilization * budget.gpu_memory_gib
    if shared["teacher"]:
        parts["teacher vLLM"] = teacher_engine.gpu_memory_utilization * budget.gpu_memory_gib
    if shared["learner"]:
        parts["learner"] = budget.learner_gib_per_rank
    if sum(parts.values()) > budget.gpu_memory_gib:
        detail = " + ".join(f"{k} {v:.1f}" for k, v in parts.items())
        out.append(
            f"{where}: what shares one GPU needs {detail} = {sum(parts.values()):.1f} GiB, more than its "
            f"{budget.gpu_memory_gib:g} GiB (lower engine.gpu_memory_utilization or the learner's share)"
        )
    return out


def serve_config(
    cfg: ServeFile, redis_url: str | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Ray Serve config to deploy: the file's, with the bus URL in the gateway's args when
    given (else the gateway reads $REDIS_URL) and ``env`` in every application's runtime env."""
    out = copy.deepcopy(cfg.serve)
    apps = out["applications"]
    if redis_url:
        args = apps[cfg.gateway_index].setdefault("args", {}) or {}
        args.setdefault("bus", {})
        args["bus"].setdefault("url", redis_url)
        apps[cfg.gateway_index]["args"] = args
    if env:
        for app in apps:
            runtime_env = app.setdefault("runtime_env", {}) or {}
            runtime_env["env_vars"] = env | runtime_env.get("env_vars", {})
            app["runtime_env"] = runtime_env
    return out


def serve(cfg: ServeFile, *, host: str | None = None, port: int | None = None, ready: threading.Event | None = None,
          stop: threading.Event | None = None, log=print) -> None:  # fmt: skip
    """Start (or join) Ray, Redis and Serve as the file says, deploy its applications, block
    until ``stop`` is set or SIGINT/SIGTERM arrives, then stop what was started here."""
    from distil.gateway.stack import serve_env

    # Serve reads its mode when it is imported, here and in every worker: set it first.
    mode = serve_env(cfg.distil.ray.throughput_optimized) | {
        k: v for k, v in cfg.distil.ray.env.items() if k.startswith("RAY_SERVE_")
    }
    os.environ.update(mode)
    import ray
    from ray import serve as rserve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from distil.bus import EmbeddedRedis
    from distil.gateway.auth import load_token, token_file
    from distil.gateway.client import stack_file
    from distil.gateway.stack import _alive, stop_on_signals
    from distil.paths import data_dir

    state = stack_file()
    if state.is_file():
        pid = json.loads(state.read_text()).get("pid")
        if pid and _alive(pid):
            raise RuntimeError(f"a stack is already up here (pid {pid}); `distil down` stops it")
    load_token()  # create the token file before anything serves
    rcfg = cfg.distil.ray
    address = rcfg.address or os.environ.get("RAY_ADDRESS")
    redis_url = cfg.distil.redis.url or os.environ.get("REDIS_URL")
    if address and not redis_url:
        raise RuntimeError(
            f"Ray cluster {address}: its nodes need a Redis they can all reach; set REDIS_URL or "
            "distil.redis.url (an embedded Redis listens on this host's loopback only)"
        )
    redis = None
    if not redis_url:
        redis = EmbeddedRedis()
        redis_url = redis.start()
    log(f"redis   {redis_url}{' (embedded)' if redis else ''}")
    log("serve   " + " ".join(f"{k}={v}" for k, v in mode.items()))
    env = {"DISTIL_DATA_DIR": str(data_dir()), "REDIS_URL": redis_url}
    env |= {k: os.environ[k] for k in PASS_ENV if os.environ.get(k)}
    env |= mode | rcfg.env
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env})
        else:
            ray.init(
                address="local",
                num_cpus=rcfg.num_cpus,
                num_gpus=rcfg.num_gpus,
                include_dashboard=rcfg.include_dashboard,
                dashboard_host=rcfg.dashboard_host,
                runtime_env={"env_vars": env},
                _metrics_export_port=rcfg.metrics_export_port,
            )
        config = serve_config(cfg, redis_url, env)
        if host is not None or port is not None:
            http = config.setdefault("http_options", {})
            http.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
        schema = ServeDeploySchema.model_validate(config)
        rserve.start(
            http_options=schema.http_options.model_dump(),
            proxy_location=schema.proxy_location,
        )
        _get_global_client().deploy_apps(schema)  # what `serve deploy` / KubeRay do
        gateway = schema.applications[cfg.gateway_index].name
        _wait_running(gateway, cfg.distil.ready_timeout_s)
        http = schema.http_options
        url = f"http://{'127.0.0.1' if http.host in ('0.0.0.0', '::') else http.host}:{http.port}"
        state.write_text(
            json.dumps({"pid": os.getpid(), "url": url, "redis": redis_url, "config": str(cfg.path)})
        )
        log(
            f"gateway {url}  ({cfg.path.name}; docs {url}/docs; token in {token_file()} or $DISTIL_API_TOKEN)"
        )
        stop = stop_on_signals(stop)
        if ready is not None:
            ready.set()
        stop.wait()
    finally:
        log("stopping: serve, ray, redis")
        try:
            if ray.is_initialized():
                rserve.shutdown()
        finally:
            ray.shutdown()
            if redis is not None:
                redis.stop()
            state.unlink(missing_ok=True)


def _wait_running(app: str, timeout_s: float) -> None:
    from ray import serve as rserve

    deadline = time.monotonic() + timeout_s
    while True:
        status = rserve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            detail = "; ".join(
                [status.message] + [f"{n}: {d.message}" for n, d in status.deployments.items() if d.message]
            )
            raise RuntimeError(f"the {app} application failed to start: {detail}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"waited {timeout_s:.0f}s for the {app} application to run "
                f"({status.status if status else 'not deployed yet'}); raise distil.ready_timeout_s or check `serve status`"
            )
        time.sleep(0.5)


def dump_serve_config(cfg: ServeFile) -> str:
    """The Ray Serve part as YAML: KubeRay's serveConfigV2 (deploy/k8s/) or `serve deploy`."""
    return yaml.safe_dump(cfg.serve, sort_keys=False)
