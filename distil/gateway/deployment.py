"""Ray Serve deployment of the gateway (one replica: it owns the job store and the drivers).

    serve.run(build_app({"bus": {"url": "redis://..."}}), name="gateway", route_prefix="/")

The API is built in the replica (``__serve_build_asgi_app__``) around the replica's job
store, so routes and state live together. Stage services of each job are deployed by
the job's driver as their own Serve applications.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve

from distil.gateway.app import GatewaySettings

log = logging.getLogger(__name__)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bus: dict[str, Any] = Field(
        default_factory=dict, description="BusConfig; its url must reach every stage."
    )
    store_path: Path | None = Field(default=None, description="None = <data_dir>/jobs.sqlite3")
    max_active_jobs: int = Field(default=1, ge=1)
    run_jobs: bool = Field(default=True, description="False = API only (no scheduler), for load tests.")
    api: GatewaySettings = Field(default_factory=GatewaySettings)
    job_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="a partial job spec under every submitted one (e.g. the deployment's placement and "
        "engine settings, see deploy/serve/); what a job sets wins.",
    )

    @field_validator("job_defaults")
    @classmethod
    def _valid_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        from distil.gateway.spec import validate_spec
        from distil.jobs import SpecError

        try:
            validate_spec(value)
        except SpecError as exc:
            raise ValueError(f"job_defaults is not a valid partial job spec: {exc}") from None
        return value


@serve.deployment(name="gateway", num_replicas=1, max_ongoing_requests=2000, health_check_period_s=10)
@serve.ingress()
class GatewayDeployment:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        from distil.bus import Bus, BusConfig
        from distil.gateway.auth import load_token
        from distil.gateway.driver import Scheduler
        from distil.gateway.observability import Observer
        from distil.gateway.stages import ServeStages
        from distil.jobs import JobStore

        self.config = GatewayConfig.model_validate(config or {})
        self.store = JobStore(self.config.store_path)
        self.token = load_token()
        self.observer = Observer(self.store)
        self.scheduler = None
        self.bus = None
        if self.config.run_jobs:
            self.bus = Bus(BusConfig.model_validate(self.config.bus))
            bus_dict = self.bus.config.model_dump(mode="json") | {"url": self.bus.url}
            self.scheduler = Scheduler(
                self.store,
                ServeStages(bus_dict),
                self.bus,
                self.observer,
                max_active=self.config.max_active_jobs,
            )
            self.scheduler.start()

    def __serve_build_asgi_app__(self):
        import gc

        from distil.gateway.app import create_app

        app = create_app(
            self.store,
            self.token,
            observer=self.observer,
            settings=self.config.api,
            job_defaults=self.config.job_defaults,
            bus=self.bus,
        )
        # Everything imported and built so far lives as long as the replica: move it out of
        # the collector's reach, so a full collection triggered while serving does not walk
        # Ray's, FastAPI's and pydantic's objects (those pauses were the status p99 tail).
        gc.collect()
        gc.freeze()
        return app

    def check_health(self) -> None:
        if self.scheduler is not None and not self.scheduler.thread.is_alive():
            raise RuntimeError("the gateway's scheduler thread stopped")

    def __del__(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.bus is not None:
            self.bus.close()
        self.store.close()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder; ``args`` is a GatewayConfig as a dict."""
    return GatewayDeployment.bind(args or {})
