"""Prometheus metrics of the gateway: requests, jobs by state, and per job the learner's
step metrics (loss, rewards, KL, weight-sync latency, log-prob mismatch, step-time
breakdown), evaluation results, prompts fed, and per stream its backlog and pending
counts read from the bus."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from distil.jobs import JobStore

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class Observer:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "distil_gateway_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "distil_gateway_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=r,
        )
        self.jobs = Gauge("distil_jobs", "jobs by state", ["state"], registry=r)
        self.fed = Counter(
            "distil_job_prompts_fed_total", "prompt groups fed to the bus", ["job"], registry=r
        )
        self.steps = Gauge("distil_job_step", "last training step", ["job"], registry=r)
        self.train = Gauge(
            "distil_job_train_metric",
            "last StepDone metric of the learner (loss, reward_mean, success_rate, kl, time_*, "
            "logprob mismatch, ...)",
            ["job", "metric"],
            registry=r,
        )
        self.evals = Gauge("distil_job_eval_metric", "last evaluation result", ["job", "metric"], registry=r)
        self.backlog_g = Gauge(
            "distil_stream_backlog", "uncommitted entries in a job's stream", ["job", "stream"], registry=r
        )
        self.pending_g = Gauge(
            "distil_stream_pending", "entries delivered but not yet committed", ["job", "stream"], registry=r
        )

    def prompts_fed(self, job: str, n: int) -> None:
        self.fed.labels(job=job).inc(n)

    def step(self, job: str, step: int, metrics: dict[str, float]) -> None:
        self.steps.labels(job=job).set(step)
        for k, v in metrics.items():
            self.train.labels(job=job, metric=_NAME.sub("_", k)).set(v)

    def eval(self, job: str, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.evals.labels(job=job, metric=_NAME.sub("_", k)).set(v)

    def backlog(self, job: str, lengths: dict[str, int], pending: dict[str, int] | None = None) -> None:
        for s, n in lengths.items():
            self.backlog_g.labels(job=job, stream=s).set(n)
        for s, n in (pending or {}).items():
            self.pending_g.labels(job=job, stream=s).set(n)

    def render(self) -> bytes:
        counts = self.store.counts()
        for state in ("queued", "starting", "running", "completed", "failed", "cancelled"):
            self.jobs.labels(state=state).set(counts.get(state, 0))
        return generate_latest(self.registry)
