"""The feedback service's HTTP API (FastAPI): /health, /metrics, POST /v1/execute,
POST /v1/grade and the external endpoints' callback route. Blocking work runs on the
grader's bounded worker pool, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from distil.data import Task

from .callbacks import CallbackRegistry, ExternalAnswer
from .config import FeedbackConfig
from .grading import Grader
from .group import GroupFeedback
from .sandbox import ExecResult
from .sources import SourceConfig
from .verifiers import Split

MAX_PROGRAM_BYTES = 1 << 20
MAX_STDIN_BYTES = 64 << 20
MAX_RESPONSES = 1024


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program: str = Field(max_length=MAX_PROGRAM_BYTES)
    stdin: str | None = Field(default=None, max_length=MAX_STDIN_BYTES)
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    memory_mb: int | None = Field(default=None, ge=64, le=65536)


class GradeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Task
    responses: list[str] = Field(min_length=1, max_length=MAX_RESPONSES)
    split: Split = "public"
    truncated: list[bool] | None = None
    sources: list[SourceConfig] | None = Field(default=None, description="override the service's sources")
    job_id: str | None = None
    group_id: str | None = None


class ServiceState:
    """The grader (built on first use, so a Serve replica builds its own) and counters."""

    def __init__(self, config: FeedbackConfig | None) -> None:
        self.config = config or FeedbackConfig()
        self.callbacks = CallbackRegistry()
        self.counters: Counter[str] = Counter()
        self._grader: Grader | None = None
        self._lock = threading.Lock()

    def configure(self, config: FeedbackConfig) -> None:
        with self._lock:
            if self._grader is not None:
                raise RuntimeError("the service is already running with another configuration")
            self.config = config

    @property
    def grader(self) -> Grader:
        with self._lock:
            if self._grader is None:
                self._grader = Grader(self.config, callbacks=self.callbacks)
            return self._grader

    def close(self) -> None:
        with self._lock:
            if self._grader is not None:
                self._grader.close()
                self._grader = None


def create_app(config: FeedbackConfig | None = None) -> FastAPI:
    app = FastAPI(title="distil feedback service", version="1")
    state = ServiceState(config)
    app.state.feedback = state

    @app.get("/health")
    async def health() -> dict:
        grader = await asyncio.to_thread(lambda: state.grader)
        return {"status": "ok", "isolation": grader.sandbox.isolation.model_dump()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        lines = ["# TYPE distil_feedback_events_total counter"]
        for name, value in sorted(state.counters.items()):
            lines.append(f'distil_feedback_events_total{{event="{name}"}} {value}')
        lines.append(f"distil_feedback_late_callbacks_total {state.callbacks.late}")
        return "\n".join(lines) + "\n"

    @app.post("/v1/execute")
    async def execute(request: ExecuteRequest) -> ExecResult:
        grader = await asyncio.to_thread(lambda: state.grader)
        future = grader.pool.submit(
            grader.sandbox.run,
            request.program,
            stdin=request.stdin,
            timeout_s=request.timeout_s,
            memory_mb=request.memory_mb,
        )
        result = await asyncio.wrap_future(future)
        state.counters[f"execute_{result.status}"] += 1
        return result

    @app.post("/v1/grade")
    async def grade(request: GradeRequest) -> GroupFeedback:
        if request.truncated is not None and len(request.truncated) != len(request.responses):
            raise HTTPException(
                422, f"truncated has {len(request.truncated)} entries for {len(request.responses)} responses"
            )
        if any(s.kind == "human" for s in request.sources or []):
            raise HTTPException(
                422,
                "sources: kind 'human' works only in a job's feedback stage, where groups wait for "
                "reviewers (docs/feedback.md, 'Human review'); /v1/grade answers at once",
            )
        grader = await asyncio.to_thread(lambda: state.grader)
        result = await asyncio.to_thread(
            grader.grade_group,
            request.task,
            request.responses,
            split=request.split,
            truncated=request.truncated,
            sources=request.sources,
            job_id=request.job_id,
            group_id=request.group_id,
        )
        state.counters.update({f"grade_{k}": v for k, v in result.counters.items()})
        return result

    @app.post("/v1/feedback/callback/{request_id}")
    async def callback(request_id: str, answer: ExternalAnswer) -> dict:
        accepted = state.callbacks.deliver(request_id, answer)
        state.counters["callback_accepted" if accepted else "callback_late"] += 1
        return {"accepted": accepted}

    return app
