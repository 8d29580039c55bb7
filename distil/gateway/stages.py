"""Starting, watching and stopping one job's stage deployments on Ray Serve.

Per job the driver deploys three Serve applications -- ``distil-{job}-rollout``,
``distil-{job}-teacher`` and ``distil-{job}-learner`` (the rollout and teacher services
take their job at construction; the learner deployment pushes weights to the handles of
that job's rollout and teacher) -- and one feedback actor (see feedback_worker.py).
Rollout and teacher replicas beyond the first are applications of their own
(``distil-{job}-rollout-1``, ...): a Serve handle call reaches one replica, and every
engine must receive every weight update, so the learner holds one handle per replica. The
learner job itself is started through the learner's jobs API on its deployment handle.
Every wait names what it waits for and ends with :class:`StageError` after its timeout.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

from distil.gateway.spec import TypedSections
from distil.jobs.spec import JobSpec

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage could not be started or stopped working; the message says which and why."""


class StageHealth(NamedTuple):
    """What is wrong with a job's stages. ``recovering``: it heals by itself (Serve replaces
    a dead replica, Ray restarts the feedback actor), so the driver waits for it, up to
    ``timeouts.stage_recovery_s``, instead of failing the job."""

    problem: str
    recovering: bool


def app_names(job: str) -> dict[str, str]:
    return {s: f"distil-{job}-{s}" for s in ("rollout", "teacher", "learner")}


def feedback_actor_name(job: str) -> str:
    return f"distil-{job}-feedback"


def replica_suffix(i: int) -> str:
    """Replica 0 keeps the plain name and route; replica i > 0 appends ``-{i}``."""
    return "" if i == 0 else f"-{i}"


def stage_apps(job: str, rollout_replicas: int = 1, teacher_replicas: int = 1) -> list[tuple[str, str, str]]:
    """(stage, Serve application name, route prefix) of every stage application of a job."""
    counts = {"rollout": rollout_replicas, "teacher": teacher_replicas, "learner": 1}
    return [
        (stage, f"distil-{job}-{stage}{replica_suffix(i)}", f"/jobs/{job}/{stage}{replica_suffix(i)}")
        for stage, n in counts.items()
        for i in range(n)
    ]


def _job_app_pattern(job: str) -> re.Pattern:
    return re.compile(rf"^distil-{re.escape(job)}-(rollout|teacher|learner)(-\d+)?$")


class ServeStages:
    """The real stages: Serve applications and a Ray actor per job."""

    def __init__(self, bus: dict[str, Any]) -> None:
        self.bus = bus  # BusConfig as a dict, with an explicit url every stage can reach
        self.apps: dict[str, dict[str, str]] = {}  # job -> {application: stage}, set by start

    def _apps(self, job: str) -> dict[str, str]:
        """The job's stage applications: as started, else the base three and any replica Serve has."""
        if job in self.apps:
            return self.apps[job]
        from ray import serve

        found = {name: stage for stage, name, _ in stage_apps(job)}
        pattern = _job_app_pattern(job)
        for name in serve.status().applications:
            if (m := pattern.match(name)) is not None:
                found[name] = m.group(1)
        return found

    # ------------------------------------------------------------------ start

    def start(self, job: str, spec: JobSpec, typed: TypedSections, model_dir: Path, *, resume: bool) -> None:
        """Deploy what is not running yet (non-blocking); ``wait_ready`` waits for it."""
        from ray import serve

        from services.learner.deployment import LearnerDeployment
        from services.rollout.deployment import RolloutDeployment
        from services.teacher.deployment import TeacherDeployment

        running = serve.status().applications
        engine = typed.engine.model_copy(update={"model": str(model_dir)}).model_dump(mode="json")
        place = spec.placement
        plan = stage_apps(job, place.rollout_replicas, place.teacher_replicas)
        names = {stage: [name for s, name, _ in plan if s == stage] for stage in ("rollout", "teacher")}
        receivers = {"student": [[name, "rollout"] for name in names["rollout"]]}
        scorer = getattr(typed.teacher, "scorer", None) if typed.teacher.kind == "black_box" else None
        if typed.teacher.kind == "self_ema" or (scorer is not None and scorer.kind == "self_ema"):
            receivers["teacher"] = [[name, "teacher"] for name in names["teacher"]]
        builders = {
            "rollout": lambda: RolloutDeployment.options(
                ray_actor_options={"num_gpus": place.rollout_gpus}
            ).bind({"engine": engine, "sampling": spec.rollout.model_dump(mode="json")}, job, self.bus),
            "teacher": lambda: TeacherDeployment.options(
                ray_actor_options={"num_gpus": place.teacher_gpus}
            ).bind(teacher_config(typed, engine), str(model_dir), job, self.bus),
            "learner": lambda: LearnerDeployment.bind({"bus": self.bus, "receivers": receivers}),
        }
        self.apps[job] = {name: stage for stage, name, _ in plan}
        for stage, name, route in plan:
            if name in running and running[name].status in ("RUNNING", "DEPLOYING"):
                continue
            serve._run(builders[stage](), _blocking=False, name=name, route_prefix=route)
        feedback = (
            {} if typed.feedback.sources is None else {"sources": typed.feedback.model_dump()["sources"]}
        )
        self.start_feedback(job, feedback)

    def start_feedback(self, job: str, feedback: dict[str, Any]) -> None:
        """The job's feedback actor (if not running yet). Ray restarts it when it dies; the
        groups it held are claimed again from the bus after ``claim_idle_s``."""
        from distil.gateway.feedback_worker import FeedbackJobWorker

        FeedbackJobWorker.options(
            name=feedback_actor_name(job),
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
        ).remote(feedback, job, self.bus)

    def wait_ready(self, job: str, timeout_s: float, cancelled) -> None:
        from ray import serve

        deadline = time.monotonic() + timeout_s
        names = self._apps(job)
        while True:
            apps = serve.status().applications
            waiting = []
            for name, stage in names.items():
                app = apps.get(name)
                status = app.status if app else "MISSING"
                if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                    raise StageError(f"the {stage} service of job {job} failed to start: {_app_message(app)}")
                if status != "RUNNING":
                    waiting.append(
                        f"{stage} ({status})" if name == app_names(job)[stage] else f"{name} ({status})"
                    )
            health = self.feedback_health(job, timeout_s=max(1.0, deadline - time.monotonic()))
            if health.get("error"):
                raise StageError(f"the feedback stage of job {job} failed: {health['error']}")
            if not waiting:
                return
            if cancelled():
                return
            if time.monotonic() > deadline:
                raise StageError(
                    f"waited {timeout_s:.0f}s for the stage services of job {job} to become ready; "
                    f"still waiting for {', '.join(waiting)} (raise timeouts.stages_ready_s or check `serve status`)"
                )
            time.sleep(1.0)

    def start_learner(self, job: str, learner_spec: dict[str, Any], timeout_s: float = 60.0) -> dict:
        from ray import serve

        from services.learner.jobs import LearnerJobSpec

        handle = serve.get_app_handle(app_names(job)["learner"])
        try:
            status = handle.status.remote(job).result(timeout_s=timeout_s)
            if status["state"] in ("starting", "running"):
                return status | {"attached": True}  # a restarted gateway re-attaches to the running job
        except Exception:  # 404: not started yet
            pass
        try:
            return handle.start.remote(LearnerJobSpec.model_validate(learner_spec)).result(
                timeout_s=timeout_s
            )
        except Exception as exc:
            raise StageError(f"the learner refused job {job}: {exc}") from exc

    # ------------------------------------------------------------------ watch

    def learner_status(self, job: str, timeout_s: float = 30.0) -> dict:
        from ray import serve

        return serve.get_app_handle(app_names(job)["learner"]).status.remote(job).result(timeout_s=timeout_s)

    def learner_state(self, job: str, timeout_s: float = 30.0) -> str | None:
        """The learner job's state, or None when the learner has no such job."""
        try:
            return self.learner_status(job, timeout_s)["state"]
        except Exception:
            return None

    def learner_job_missing(self, job: str, timeout_s: float = 10.0) -> bool:
        """True only when the learner answers that it has no such job (404): its replica was
        replaced (crash, out of memory) and the job died with the old one. False when it has
        the job in any state, and when it does not answer (a replica still being replaced, a
        slow call): then nothing is known yet."""
        try:
            self.learner_status(job, timeout_s)
        except Exception as exc:
            return any(getattr(e, "status_code", None) == 404 for e in (exc, getattr(exc, "cause", None)))
        return False

    def wait_learner_stopped(self, job: str, timeout_s: float) -> None:
        """Wait until the learner job has stopped (it finishes its step and checkpoints first)."""
        deadline = time.monotonic() + timeout_s
        while (state := self.learner_state(job)) in ("starting", "running"):
            if time.monotonic() > deadline:
                log.warning("learner job %s still %s after %.0fs; tearing it down", job, state, timeout_s)
                return
            time.sleep(0.5)

    def feedback_health(self, job: str, timeout_s: float = 30.0) -> dict:
        import ray

        try:
            actor = ray.get_actor(feedback_actor_name(job))
        except ValueError as exc:  # gone for good: never started, or its constructor failed
            return {"alive": False, "error": f"feedback actor unavailable: {exc}"}
        try:
            return ray.get(actor.health.remote(), timeout=timeout_s)
        except Exception as exc:  # it died and Ray is restarting it, or it is slow to answer
            return {
                "alive": False,
                "restarting": True,
                "error": f"feedback actor not answering: {type(exc).__name__}: {exc}",
            }

    def health(self, job: str) -> StageHealth | None:
        """None when every stage is up, else what is wrong and whether it is recovering."""
        from ray import serve

        apps = serve.status().applications
        for name, stage in self._apps(job).items():
            app = apps.get(name)
            if app is None:
                return StageHealth(f"the {stage} service of job {job} is gone ({name})", False)
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                # UNHEALTHY: a replica died or failed its health checks; Serve is replacing it.
                return StageHealth(
                    f"the {stage} service of job {job} is {app.status}: {_app_message(app)}",
                    app.status == "UNHEALTHY",
                )
        fb = self.feedback_health(job)
        if fb.get("error") or not fb.get("alive", False):
            return StageHealth(
                f"the feedback stage of job {job} stopped: {fb.get('error') or 'thread exited'}",
                bool(fb.get("restarting")),
            )
        return None

    # ------------------------------------------------------------------ evaluation

    def generate(self, job: str, prompt_ids: list[int], *, n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, timeout_s: float) -> list[dict]:  # fmt: skip
        from ray import serve

        from services.rollout.deployment import CompletionRequest

        handle = serve.get_app_handle(app_names(job)["rollout"])
        req = CompletionRequest(
            prompt=prompt_ids, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
        )
        return handle.completions.remote(req).result(timeout_s=timeout_s)["choices"]

    def grade(
        self, job: str, task: dict, texts: list[str], truncated: list[bool], timeout_s: float
    ) -> list[dict]:
        import ray

        actor = ray.get_actor(feedback_actor_name(job))
        return ray.get(actor.grade.remote(task, texts, truncated), timeout=timeout_s)

    # ------------------------------------------------------------------ stop

    def stop_learner(self, job: str, timeout_s: float = 60.0) -> None:
        from ray import serve

        try:
            serve.get_app_handle(app_names(job)["learner"]).stop.remote(job).result(timeout_s=timeout_s)
        except Exception as exc:
            log.warning("could not stop the learner job %s: %s", job, exc)

    def teardown(self, job: str) -> None:
        import ray
        from ray import serve

        try:
            actor = ray.get_actor(feedback_actor_name(job))
            try:
                ray.get(actor.shutdown.remote(), timeout=60)
            finally:
                ray.kill(actor)
        except ValueError:
            pass  # never started
        except Exception as exc:
            log.warning("feedback actor of %s did not stop cleanly: %s", job, exc)
        for name in self._apps(job):
            try:
                serve.delete(name, _blocking=False)
            except Exception as exc:
                log.warning("could not delete Serve application %s: %s", name, exc)
        self.apps.pop(job, None)


def teacher_config(typed: TypedSections, engine: dict[str, Any]) -> dict[str, Any]:
    """The teacher's config; a self-teacher without its own engine settings gets the rollout
    engine's (same model, same limits), so a spec names the model once. Without ``lora``:
    a LoRA student's EMA teacher receives merged full weights (services/learner/lora.py)."""
    teacher = typed.teacher.model_dump(mode="json")
    engine = {**engine, "lora": None}
    if teacher["kind"] in ("self_ema", "self_frozen") and teacher.get("engine") is None:
        teacher["engine"] = engine
    scorer = teacher.get("scorer")
    if teacher["kind"] == "black_box" and scorer is not None and scorer.get("engine") is None:
        scorer["engine"] = engine
    return teacher


def _app_message(app) -> str:
    if app is None:
        return "missing"
    parts = [app.message] if app.message else []
    for name, dep in (app.deployments or {}).items():
        if dep.message:
            parts.append(f"{name}: {dep.message}")
    return "; ".join(parts) or app.status
