"""Ray Serve deployment of the learner service.

    serve run services.learner.deployment:build_app

    GET  /health, /metrics
    POST /v1/learner/jobs            start training a job from its scored stream
    GET  /v1/learner/jobs/{job_id}   state, steps, policy version, counters, last metrics
    POST /v1/learner/jobs/{job_id}/stop

The replica owns the training: one ``LocalTrainer`` in-process for ``world_size=1``, or a
group of FSDP2 worker actors (``TrainerGroup``) it starts per job. Weights go to the
rollout and teacher deployments named in ``receivers`` through Ray's object store.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from ray import serve

from distil.bus import BusConfig
from services.learner.app import LearnerService
from services.learner.jobs import LearnerJobSpec
from services.learner.publish import RayObjectStoreTransport

app = FastAPI(title="distil learner", version="1")


@serve.deployment(name="learner", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(app)
class LearnerDeployment:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        receivers = {
            target: [serve.get_deployment_handle(name, app_name=app_name) for app_name, name in pairs]
            for target, pairs in config.pop("receivers", {}).items()
        }
        transport = RayObjectStoreTransport(receivers) if receivers else None
        self.service = LearnerService(BusConfig.model_validate(config.get("bus", {})), transport)

    @app.get("/health")
    def health(self) -> dict:
        return {"status": "ok", "jobs": {k: j.state for k, j in self.service.jobs.items()}}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(self) -> bytes:
        return self.service.metrics()

    @app.post("/v1/learner/jobs", status_code=202)
    def start(self, spec: LearnerJobSpec) -> dict:
        return self.service.start(spec)

    @app.get("/v1/learner/jobs/{job_id}")
    def status(self, job_id: str) -> dict:
        return self.service.get(job_id).status()

    @app.post("/v1/learner/jobs/{job_id}/stop", status_code=202)
    def stop(self, job_id: str) -> dict:
        job = self.service.get(job_id)
        job.stop()
        return job.status()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder. ``args``: ``{"bus": BusConfig dict, "receivers": {"student":
    [[app, deployment], ...], "teacher": [...]}}``."""
    return LearnerDeployment.bind(args or {})
