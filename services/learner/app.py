"""The learner service's HTTP API: /health, /metrics, and learner jobs.

POST /v1/learner/jobs            start training a job from its scored stream
GET  /v1/learner/jobs/{job_id}   state, steps, policy version, counters, last metrics
POST /v1/learner/jobs/{job_id}/stop
"""

from __future__ import annotations

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from distil.bus import BusConfig
from services.learner.jobs import LearnerJob, LearnerJobSpec

_GAUGES = {
    "steps": "training steps done",
    "policy_version": "latest policy version",
    "groups_trained": "groups trained",
    "dropped_stale": "groups dropped as too stale",
    "rejected_groups": "groups dead-lettered by the learner",
    "worker_restarts": "training worker group restarts",
}
_METRIC_GAUGES = (
    "loss",
    "grad_norm",
    "tokens_per_s",
    "time_wait_data",
    "time_forward_backward",
    "time_weight_push",
)


class LearnerService:
    def __init__(self, bus_config: BusConfig | None = None, transport=None):
        self.bus_config = bus_config or BusConfig()
        self.transport = transport
        self.jobs: dict[str, LearnerJob] = {}

    def start(self, spec: LearnerJobSpec) -> dict:
        job = self.jobs.get(spec.job_id)
        if job is not None and job.state in ("starting", "running"):
            raise HTTPException(409, f"learner job {spec.job_id} is already {job.state}")
        self.jobs[spec.job_id] = LearnerJob(spec, self.bus_config, self.transport)
        return self.jobs[spec.job_id].status()

    def get(self, job_id: str) -> LearnerJob:
        if job_id not in self.jobs:
            raise HTTPException(404, f"no learner job {job_id!r}; start it with POST /v1/learner/jobs")
        return self.jobs[job_id]

    def metrics(self) -> bytes:
        registry = CollectorRegistry()
        gauges = {k: Gauge(f"distil_learner_{k}", v, ["job"], registry=registry) for k, v in _GAUGES.items()}
        step_gauges = {
            k: Gauge(f"distil_learner_step_{k}", f"last step's {k}", ["job"], registry=registry)
            for k in _METRIC_GAUGES
        }
        for job_id, job in self.jobs.items():
            status = job.status()
            for k, g in gauges.items():
                g.labels(job=job_id).set(status[k])
            for k, g in step_gauges.items():
                if k in status["metrics"]:
                    g.labels(job=job_id).set(status["metrics"][k])
        return generate_latest(registry)
