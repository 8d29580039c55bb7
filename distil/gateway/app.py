"""The gateway's REST API (FastAPI): jobs, their history and live events.

Every route except ``/health`` needs ``Authorization: Bearer <token>``. CORS is closed
unless origins are configured; request bodies over ``max_body_bytes`` get 413. Invalid
job specs get 422 with a field path per problem.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from distil.gateway.auth import check_bearer
from distil.gateway.observability import Observer
from distil.jobs import FINAL, InvalidTransition, JobNotFound, JobSpec, JobStore, SpecError, parse_document
from distil.jobs.spec import with_defaults

JOB_ID = r"^[A-Za-z0-9_.-]{1,128}$"
JobId = Annotated[str, Path(pattern=JOB_ID, description="job id as returned by POST /v1/jobs")]
StateName = Literal["queued", "starting", "running", "completed", "failed", "cancelled"]


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger request bodies get 413")
    cors_origins: list[str] = Field(default_factory=list, description="empty = CORS closed")
    sse_poll_s: float = Field(default=0.5, gt=0)
    sse_heartbeat_s: float = Field(default=15.0, gt=0)


class Job(BaseModel):
    id: str
    name: str | None
    state: StateName
    reason: str
    step: int
    steps: int | None
    policy_version: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool


class JobDetail(Job):
    spec: dict[str, Any]
    last_metrics: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[Job]


class FieldError(BaseModel):
    loc: str
    msg: str
    type: str = "value_error"


class SpecRejected(BaseModel):
    detail: list[FieldError]


class Problem(BaseModel):
    detail: str


class MetricsSeries(BaseModel):
    job_id: str
    points: list[dict[str, Any]] = Field(description="one per step: {step, kind, ts, <metric>: value}")


class Checkpoint(BaseModel):
    step: int
    policy_version: int
    path: str
    ts: float


class Checkpoints(BaseModel):
    job_id: str
    checkpoints: list[Checkpoint]


class Samples(BaseModel):
    job_id: str
    samples: list[dict[str, Any]] = Field(
        description="recent trajectories: prompt, response, reward, success, feedback_text, solution_text, teacher signal"
    )


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _too_large(send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class RequestMetrics:
    """ASGI middleware: request count and latency per route template (plain ASGI, no
    per-request task group as with ``@app.middleware``)."""

    def __init__(self, app, observer: Observer) -> None:
        self.app, self.observer = app, observer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "other")
            self.observer.requests.labels(scope["method"], path, str(status[0])).inc()
            self.observer.latency.labels(path).observe(time.perf_counter() - t0)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body exceeds {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def create_app(store: JobStore, token: str, *, observer: Observer | None = None,
               settings: GatewaySettings | None = None, job_defaults: dict[str, Any] | None = None,
               bus=None) -> FastAPI:  # fmt: skip
    """``bus`` (a ``distil.bus.Bus``) backs the review queue API; None answers those routes 503."""
    settings = settings or GatewaySettings()
    observer = observer or Observer(store)
    bearer = HTTPBearer(auto_error=False, description="DISTIL_API_TOKEN")

    async def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        # async: checked on the event loop, not handed to a worker thread and back per request
        header = f"Bearer {creds.credentials}" if creds else None
        if not check_bearer(header, token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="distil gateway",
        version="1",
        description="Submit and steer DistIL training jobs. Auth: `Authorization: Bearer $DISTIL_API_TOKEN`.",
    )
    unauthorized = {401: {"model": Problem, "description": "missing or wrong bearer token"}}
    not_found = {404: {"model": Problem, "description": "no such job"}}
    auth = [Depends(authorized)]

    app.add_middleware(RequestMetrics, observer=observer)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    def get_job(job_id: str):
        try:
            return store.get(job_id)
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id!r}; GET /v1/jobs lists them") from None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=auth, responses=unauthorized)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(observer.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/prometheus/targets", dependencies=auth, responses=unauthorized)
    async def prometheus_targets(request: Request) -> list[dict[str, Any]]:
        """Prometheus HTTP service discovery: the /metrics of every active job's stage services
        (served by the same HTTP proxy as this API)."""
        from distil.gateway.stages import stage_apps

        host = request.headers.get("host") or "127.0.0.1:8000"
        out = []
        for job in store.active():
            place = job.spec.get("placement", {})
            for stage, app_name, route in stage_apps(
                job.id, place.get("rollout_replicas", 1), place.get("teacher_replicas", 1)
            ):
                labels = {"__metrics_path__": f"{route}/metrics", "job_id": job.id, "stage": stage}
                out.append({"targets": [host], "labels": labels | {"app": app_name}})
        return out

    @app.post(
        "/v1/jobs",
        status_code=201,
        dependencies=auth,
        response_model=Job,
        responses={
            **unauthorized,
            422: {"model": SpecRejected, "description": "invalid spec, with field paths"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
                    "application/yaml": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def submit(request: Request):
        """Submit a job spec (JSON, or YAML with `Content-Type: application/yaml`). It is queued;
        one job runs at a time by default. External URLs in it are not contacted here."""
        from distil.gateway.spec import validate_spec

        body = await request.body()
        try:
            document = parse_document(body, request.headers.get("content-type", ""))
            spec, _ = validate_spec(with_defaults(document, job_defaults or {}))
        except SpecError as exc:
            return JSONResponse(status_code=422, content={"detail": exc.errors})
        except UnicodeDecodeError:
            return JSONResponse(
                status_code=422, content={"detail": [{"loc": "(spec)", "msg": "body is not UTF-8"}]}
            )
        job = store.create(stored_spec(spec), name=spec.name)
        return job.public()

    @app.get("/v1/jobs", dependencies=auth, response_model=JobList, responses=unauthorized)
    async def list_jobs(
        state: StateName | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ):
        return fast_json({"jobs": [j.public() for j in store.list(state, limit, offset)]})

    @app.get(
        "/v1/jobs/{job_id}",
        dependencies=auth,
        response_model=JobDetail,
        responses={**unauthorized, **not_found},
    )
    async def job_detail(job_id: JobId):
        job = get_job(job_id)
        train = store.metrics(job_id, "train", since_step=job.step - 1)
        evals = store.metrics(job_id, "eval")
        return fast_json({**job.public(), "spec": job.spec, "last_metrics": train[-1] if train else None,
                          "last_eval": evals[-1] if evals else None})  # fmt: skip

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, dependencies=auth, response_model=Job,
              responses={**unauthorized, **not_found, 409: {"model": Problem}})  # fmt: skip
    async def cancel(job_id: JobId):
        get_job(job_id)
        try:
            return store.request_cancel(job_id).public()
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/v1/jobs/{job_id}/resume", status_code=202, dependencies=auth, response_model=Job,
              responses={**unauthorized, **not_found, 409: {"model": Problem}})  # fmt: skip
    async def resume(job_id: JobId):
        """Queue a failed or cancelled job again: prompts continue from its cursor, training
        from its last checkpoint."""
        get_job(job_id)
        try:
            return store.transition(job_id, "queued", "resumed by the user").public()
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/v1/jobs/{job_id}/metrics", dependencies=auth, response_model=MetricsSeries,
             responses={**unauthorized, **not_found})  # fmt: skip
    async def job_metrics(
        job_id: JobId,
        kind: Literal["train", "eval"] | None = None,
        since_step: Annotated[int, Query(ge=-1, le=10**9)] = -1,
    ):
        get_job(job_id)
        return {"job_id": job_id, "points": store.metrics(job_id, kind, since_step)}

    @app.get("/v1/jobs/{job_id}/checkpoints", dependencies=auth, response_model=Checkpoints,
             responses={**unauthorized, **not_found})  # fmt: skip
    async def checkpoints(job_id: JobId):
        get_job(job_id)
        return {"job_id": job_id, "checkpoints": store.checkpoints(job_id)}

    @app.get("/v1/jobs/{job_id}/samples", dependencies=auth, response_model=Samples,
             responses={**unauthorized, **not_found})  # fmt: skip
    async def samples(job_id: JobId, limit: Annotated[int, Query(ge=1, le=200)] = 20):
        get_job(job_id)
        return {"job_id": job_id, "samples": store.samples(job_id, limit)}

    @app.get("/v1/jobs/{job_id}/events", dependencies=auth, responses={
        **unauthorized, **not_found, 200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})  # fmt: skip
    async def events(
        job_id: JobId,
        request: Request,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        follow: bool = True,
    ):
        """Server-sent events: `state`, `step`, `checkpoint`, `eval`, `finished`, ... Each event's
        `id` is its sequence number (resume with `?after=` or `Last-Event-ID`). With `follow`
        the stream stays open until the job has ended and every event was sent."""
        get_job(job_id)
        last = request.headers.get("last-event-id")
        start = int(last) if last and last.isdigit() else after

        async def stream():
            seq, quiet = start, 0.0
            while True:
                batch = store.events(job_id, after=seq)
                for ev in batch:
                    seq = ev["seq"]
                    yield f"id: {seq}\nevent: {ev['kind']}\ndata: {json.dumps({'ts': ev['ts'], **ev['data']})}\n\n"
                if batch:
                    quiet = 0.0
                    continue
                if not follow or store.get(job_id).state in FINAL:
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(settings.sse_poll_s)
                quiet += settings.sse_poll_s
                if quiet >= settings.sse_heartbeat_s:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec_schema.pop("$defs", {}))
            components["JobSpec"] = spec_schema
            app.openapi_schema = schema
        return app.openapi_schema

    from distil.gateway.reviews import add_review_routes

    add_review_routes(app, auth=auth, get_job=get_job, bus=bus)
    app.openapi = openapi
    return app


def fast_json(data: Any) -> Response:
    """The hot status routes serialise plain store data directly (their response models
    document the shape; re-validating what the store returns would only cost time)."""
    return Response(json.dumps(data, separators=(",", ":"), allow_nan=False), media_type="application/json")


def stored_spec(spec: JobSpec) -> dict[str, Any]:
    """The spec as stored: every default filled in (so a later change of a default does not
    change a queued job), except the objective's unset fields, which the objective resolves."""
    data = spec.model_dump(mode="json")
    data["objective"] = spec.objective.model_dump(mode="json", exclude_unset=True)
    return data
