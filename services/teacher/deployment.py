"""Ray Serve deployment of the teacher service.

    serve.run(build_app({"teacher": {"kind": "self_ema"}, "student_model": "/path", "job": "job1"}))

With ``job`` set, a replica consumes that job's ``feedback`` stream (consumer group
``teacher``), builds teacher contexts, scores the responses that carry a teacher signal
and writes ``scored``. ``GET /health``, ``GET /metrics``; the learner pushes EMA weights
through ``update_weights`` on a deployment handle (self_ema, or a black-box teacher's
self-teacher scorer).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import TypeAdapter
from ray import serve

from distil.bus import Bus
from distil.engine import PromptTooLong
from distil.engine.bus_loop import LoopStats, LoopThread, resolve_tensors, start_consumer

from .config import TeacherConfig
from .external import TokenizerMismatch
from .self_teacher import SelfTeacher
from .stage import TeacherStage, build_teacher

app = FastAPI(title="distil teacher")


@serve.deployment(
    name="teacher", max_ongoing_requests=256, health_check_period_s=10, health_check_timeout_s=30
)
@serve.ingress(app)
class TeacherDeployment:
    def __init__(
        self,
        teacher: dict[str, Any],
        student_model: str,
        job: str | None = None,
        bus: dict[str, Any] | None = None,
        max_inflight_groups: int = 32,
    ) -> None:
        self.config = TypeAdapter(TeacherConfig).validate_python(teacher)
        self.teacher = build_teacher(self.config, student_model)
        self.stage = TeacherStage(self.teacher)
        self.loop = LoopThread("teacher-loop")
        check = getattr(self.teacher, "check_tokenizer", None)
        if check is not None:  # refuse a mismatched external teacher at start (if it is reachable)
            try:
                self.loop.run(check(), 120, "checking the external teacher's tokenizer")
            except TokenizerMismatch:
                raise
            except Exception:  # unreachable now: checked again before the first scoring request
                pass
        self.stats = LoopStats()
        self.stop = threading.Event()
        self.bus: Bus | None = None
        self.thread: threading.Thread | None = None
        if job:
            self.bus, self.thread = start_consumer(
                bus,
                job,
                ("feedback", "teacher", "scored"),
                self.stage.handle,
                self.loop.loop,
                stop=self.stop,
                max_inflight=max_inflight_groups,
                permanent=(PromptTooLong, TokenizerMismatch, ValueError),
                stats=self.stats,
                name="teacher-consumer",
                expect_weights=self._expect_weights(),
            )

    def _expect_weights(self):
        """The engine that takes the learner's weight updates (a self-EMA teacher's, or the
        self-EMA scorer's of a black box), to wait for the job's current weights on start."""
        engine_owner = getattr(self.teacher, "scorer", None) or self.teacher
        if isinstance(engine_owner, SelfTeacher) and engine_owner.kind == "self_ema":
            return engine_owner.runner.engine.expect_version
        return None

    async def check_health(self) -> None:
        if isinstance(self.teacher, SelfTeacher):
            runner = self.teacher.runner
            await runner.call(runner.engine.llm.check_health)
        if self.thread is not None and not self.thread.is_alive() and not self.stop.is_set():
            raise RuntimeError("the teacher consumer loop stopped; restarting the replica")

    @app.get("/health")
    async def health(self) -> dict:
        try:
            await self.check_health()
        except Exception as exc:
            raise HTTPException(503, f"unhealthy: {exc}") from exc
        return {"status": "ok", "kind": self.config.kind}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> str:
        rows = {f"distil_{k}_total": v for k, v in self.stage.metrics().items()}
        rows |= {
            "distil_teacher_committed_total": self.stats.committed,
            "distil_teacher_dead_lettered_total": self.stats.dead_lettered,
            "distil_teacher_failed_total": self.stats.failed,
        }
        return "".join(f"{k} {v}\n" for k, v in rows.items())

    async def update_weights(self, named_tensors, version: int, probe=None):
        """Called by the learner with the EMA teacher weights."""
        named_tensors = await resolve_tensors(named_tensors)
        return await self.teacher.update_weights(named_tensors, version, probe)

    async def weight_dtype(self) -> str | None:
        """The dtype the teacher's engine holds weights in (None: the teacher takes no weights)."""
        runner = getattr(self.teacher, "runner", None)
        engine = getattr(runner, "engine", None)
        return str(engine.dtype).removeprefix("torch.") if engine is not None else None

    def __del__(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        self.teacher.close()
        self.loop.close()
        if self.bus is not None:
            self.bus.close()


def build_app(args: dict[str, Any]) -> serve.Application:
    """``{"teacher": TeacherConfig, "student_model": str, "job": str | None, "bus": BusConfig}``."""
    return TeacherDeployment.bind(
        args["teacher"],
        args["student_model"],
        args.get("job"),
        args.get("bus"),
        args.get("max_inflight_groups", 32),
    )
