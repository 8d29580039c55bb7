"""Per-job driver and the scheduler that runs one job at a time.

The driver of a job: checks the model and dataset (failing in seconds when either is
wrong), starts the stage services, feeds prompts within the in-flight bound
``(max_staleness + 1) x groups_per_step``, records the learner's events (steps,
checkpoints, end) in the job store, samples recent trajectories for the API, runs the
held-out evaluation every N steps, and finalises the job. Each wait has a timeout and a
name; a stalled job fails with what it was waiting for.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distil.bus import Bus, CheckpointWritten, Group, JobFailed, JobFinished, StepDone, WeightsUpdated
from distil.bus.envelope import from_fields
from distil.bus.staleness import max_groups_in_flight
from distil.data import Task
from distil.gateway.observability import Observer
from distil.gateway.spec import TypedSections, validate_spec
from distil.gateway.stages import ServeStages, StageError
from distil.jobs import Cursor, JobRecord, JobStore, PromptFeeder
from distil.jobs.spec import JobSpec

log = logging.getLogger(__name__)
STREAMS = ("prompts", "rollouts", "feedback", "scored")


class JobFailure(RuntimeError):
    """Ends the job as failed with this message as its reason."""


def load_dataset(spec: JobSpec) -> tuple[list[Task], list[Task]]:
    """(train, eval) tasks; errors name the file (or dataset and split) and what is wrong."""
    from distil.data import load_hf_tasks, load_tasks
    from distil.data.humaneval import load_humaneval

    ds = spec.dataset

    def hf(split: str, limit: int | None) -> list[Task]:
        return load_hf_tasks(ds.path, config=ds.config, split=split, fields=ds.fields, verifier=ds.verifier,
                             limit=limit)  # fmt: skip

    try:
        if ds.kind == "hf":
            tasks = hf(ds.split, ds.limit)
        else:
            tasks = load_humaneval() if ds.kind == "humaneval" else load_tasks(ds.path)
    except FileNotFoundError as exc:
        raise JobFailure(f"dataset: {exc}") from None
    except ValueError as exc:
        raise JobFailure(f"dataset: {exc}") from None
    if ds.limit:
        tasks = tasks[: ds.limit]
    if ds.eval_split:
        try:
            held_out = hf(ds.eval_split, None)
        except ValueError as exc:
            raise JobFailure(f"dataset.eval_split: {exc}") from None
        train = tasks
    elif ds.eval_path:
        try:
            held_out = load_tasks(ds.eval_path)
        except (FileNotFoundError, ValueError) as exc:
            raise JobFailure(f"dataset.eval_path: {exc}") from None
        train = tasks
    else:
        n_eval = int(len(tasks) * ds.eval_fraction)
        train, held_out = tasks[: len(tasks) - n_eval], tasks[len(tasks) - n_eval :]
    if not train:
        raise JobFailure("dataset: the training split is empty")
    return train, held_out


def resolve(spec: JobSpec) -> Path:
    from distil.models import resolve_model

    try:
        path = resolve_model(spec.model)
    except FileNotFoundError as exc:
        raise JobFailure(f"model: {exc}") from None
    if not (path / "config.json").is_file():
        raise JobFailure(f"model: {path} has no config.json")
    return path


class JobDriver:
    def __init__(self, store: JobStore, stages: ServeStages, bus: Bus, job: JobRecord, observer: Observer,
                 *, poll_s: float = 0.5) -> None:  # fmt: skip
        self.store, self.stages, self.bus, self.observer = store, stages, bus, observer
        self.job_id = job.id
        self.resume = job.state in ("starting", "running")
        self.poll_s = poll_s
        self.thread = threading.Thread(target=self._run, name=f"driver-{job.id}", daemon=True)
        self.stop_event = threading.Event()  # gateway shutting down: leave the job as it is

    def start(self) -> None:
        self.thread.start()

    def cancelled(self) -> bool:
        return self.store.get(self.job_id).cancel_requested

    # ------------------------------------------------------------------ main

    def _run(self) -> None:
        job_id = self.job_id
        try:
            job = self.store.get(job_id)
            if job.state == "queued":
                self.store.transition(job_id, "starting")
            spec, typed = validate_spec(job.spec)
            model_dir = resolve(spec)
            train, held_out = load_dataset(spec)
            self.store.add_event(job_id, "prepared", {"model": str(model_dir), "train": len(train),
                                                      "eval": len(held_out)})  # fmt: skip
            self.stages.start(job_id, spec, typed, model_dir, resume=self.resume)
            self.stages.wait_ready(
                job_id, spec.timeouts.stages_ready_s, lambda: self.stop_event.is_set() or self.cancelled()
            )
            if self.stop_event.is_set():
                return
            if spec.evaluation.at_start and held_out and self.store.get(job_id).step == 0:
                if not any(p["step"] == 0 for p in self.store.metrics(job_id, "eval")):
                    self._evaluate_safely(spec, held_out, model_dir, 0)  # baseline, before any update
            if not self.cancelled():
                if not self._start_learner(spec, typed, model_dir):
                    return
                if self.store.get(job_id).state == "starting":
                    self.store.transition(job_id, "running")
            self._loop(spec, typed, train, held_out, model_dir)
        except JobFailure as exc:
            self._fail(str(exc))
        except StageError as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.error("driver of %s crashed:\n%s", job_id, traceback.format_exc())
            self._fail(f"driver error: {type(exc).__name__}: {exc}")
        finally:
            if not self.stop_event.is_set() and self.store.get(job_id).state in (
                "completed",
                "failed",
                "cancelled",
            ):
                self.stages.teardown(job_id)

    def _fail(self, reason: str) -> None:
        if self.stop_event.is_set():  # the gateway is shutting down: leave the job to the next one
            log.info("job %s left as it is at gateway shutdown (%s)", self.job_id, reason)
            return
        log.warning("job %s failed: %s", self.job_id, reason)
        try:
            self.store.transition(self.job_id, "failed", reason)
        except Exception:
            log.exception("could not record the failure of %s", self.job_id)

    def _start_learner(self, spec: JobSpec, typed: TypedSections, model_dir: Path) -> str | None:
        """Start the learner job (``"started"``) or re-attach to it (``"attached"``); None
        when its last checkpoint has every step (the job is then completed).

        A learner started afresh for a resumed job (or after its replica died) restores its
        last checkpoint and counts its steps from there, so the driver records
        ``step_offset`` (the checkpoint's step) and ``issued_base`` (groups issued before,
        minus those still on the streams, which the new learner will still consume, and
        minus the dead letters, which the in-flight count subtracts itself) next to the
        prompt cursor."""
        job_id = self.job_id
        if self.stages.learner_state(job_id) not in ("starting", "running"):
            # Events a previous learner run wrote after its driver stopped reading (its last
            # step and checkpoint at a cancel) belong to that run: record them first.
            self._drain_events(int(self.store.get(job_id).cursor.get("step_offset", 0)))
        checkpoints = self.store.checkpoints(job_id)
        resume_from = checkpoints[-1]["step"] if checkpoints else 0
        if resume_from >= spec.steps:
            self.store.transition(job_id, "completed", "")
            self.store.add_event(
                job_id, "finished", {"step": resume_from, "checkpoint": checkpoints[-1]["path"]}
            )
            return None
        status = self.stages.start_learner(
            job_id, self._learner_spec(spec, typed, model_dir, spec.steps - resume_from)
        )
        if status.get("attached"):
            return "attached"
        job = self.store.get(job_id)
        on_streams, dead = self._stream_totals()
        base = {
            "step_offset": resume_from,
            "issued_base": max(Cursor.from_dict(job.cursor).issued - on_streams - dead, 0),
        }
        self.store.save_cursor(job_id, {**job.cursor, **base})
        return "started"

    def _learner_spec(
        self, spec: JobSpec, typed: TypedSections, model_dir: Path, steps: int
    ) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "model": str(model_dir),
            "steps": steps,
            "objective": spec.objective.model_dump(exclude_unset=True),
            "train": typed.training.model_dump(mode="json"),
            "stage": typed.learner.model_dump(mode="json"),
            "world_size": max(1, spec.placement.learner_gpus),
            "gpus_per_rank": spec.placement.learner_gpus_per_rank if spec.placement.learner_gpus else 0.0,
            "keep_last": spec.checkpoint.keep_last,
        }

    # ------------------------------------------------------------------ loop

    def _loop(self, spec: JobSpec, typed: TypedSections, train: list[Task], held_out: list[Task],
              model_dir: Path) -> None:  # fmt: skip
        job_id = self.job_id
        job = self.store.get(job_id)
        feeder = PromptFeeder(
            len(train), seed=spec.seed, epochs=spec.epochs, cursor=Cursor.from_dict(job.cursor)
        )
        producer = self.bus.producer(job_id, "prompts")
        events = self.bus.consumer(job_id, "events", group="gateway", name="driver")
        bound = max_groups_in_flight(typed.learner.max_staleness, typed.learner.groups_per_step)
        offset = int(job.cursor.get("step_offset", 0))  # learner step 1 of a resumed job = offset + 1
        issued_base = int(job.cursor.get("issued_base", 0))
        step = job.step
        consumed = max(step - offset, 0) * typed.learner.groups_per_step
        last_event = time.monotonic()
        last_sample = last_health = 0.0
        unhealthy_since: float | None = None  # since when a stage has been recovering
        next_eval = self._next_eval(spec, step)
        while True:
            if self.stop_event.is_set():
                return  # the gateway is going away; a restarted one re-attaches
            if self.cancelled():
                self.stages.stop_learner(job_id)
                self.stages.wait_learner_stopped(job_id, timeout_s=spec.timeouts.step_s)
                self._drain_events(offset, typed)
                self.store.transition(job_id, "cancelled", "cancelled by the user")
                return
            # Feed within the in-flight bound (dead letters count as done: they never reach the learner).
            in_flight = feeder.cursor.issued - issued_base - consumed - self._dead_letters()
            if in_flight < bound and not feeder.exhausted:
                issues = feeder.take(bound - in_flight)
                groups = [self._group(job_id, train[i.task_index], i.group_id, spec) for i in issues]
                if groups:
                    producer.publish_many(groups)
                    self.store.save_cursor(
                        job_id, feeder.cursor.to_dict() | {"step_offset": offset, "issued_base": issued_base}
                    )
                    self.observer.prompts_fed(job_id, len(groups))
            # Learner events.
            for d in events.read(count=64, block_s=self.poll_s):
                last_event = time.monotonic()
                outcome = self._record(d.value, offset, typed)
                events.ack([d])
                if isinstance(d.value, StepDone):
                    step = max(step, d.value.step)
                    consumed = outcome
                    if next_eval is not None and step >= next_eval and held_out:
                        # Right at the step that reached it, not after the rest of this batch.
                        self._evaluate_safely(spec, held_out, model_dir, step)
                        next_eval = self._next_eval(spec, step)
                        last_event = time.monotonic()
                elif isinstance(d.value, JobFailed):
                    raise JobFailure(f"learner failed at step {d.value.step}: {d.value.error}")
                elif isinstance(d.value, JobFinished):
                    if spec.evaluation.at_end and held_out:
                        self._evaluate_safely(spec, held_out, model_dir, d.value.step)
                    self.store.transition(job_id, "completed", "")
                    self.store.add_event(
                        job_id, "finished", {"step": d.value.step, "checkpoint": d.value.final_checkpoint}
                    )
                    return
            now = time.monotonic()
            if now - last_sample > 5.0:
                last_sample = now
                self._sample_recent(job_id)
                self.observer.backlog(
                    job_id,
                    {s: self._safe_backlog(s) for s in STREAMS},
                    {s: self._pending(s) for s in STREAMS},
                )
            if now - last_health > 10.0:
                last_health = now
                unhealthy_since = self._check_health(spec, unhealthy_since, now)
                if self.stages.learner_job_missing(job_id):
                    # The learner's replica was replaced (crash, out of memory) and the job
                    # died with the old one: start it again from its last checkpoint. Steps
                    # the dead one trained after it are retrained (their groups were not
                    # acknowledged) and recorded again under the same numbers.
                    log.warning("job %s: the learner lost the job; restarting it from its checkpoint", job_id)
                    started = self._start_learner(spec, typed, model_dir)
                    if started is None:
                        return  # the last checkpoint has every step: completed
                    if started == "started":
                        cursor = self.store.get(job_id).cursor
                        offset, issued_base = int(cursor["step_offset"]), int(cursor["issued_base"])
                        step, consumed = offset, 0
                        self.store.add_event(job_id, "learner_restarted", {"from_step": offset})
                    last_event = time.monotonic()
            limit = spec.timeouts.first_step_s if step == 0 else spec.timeouts.step_s
            if now - last_event > limit:
                raise JobFailure(
                    f"waited {limit:.0f}s (timeouts.{'first_step_s' if step == 0 else 'step_s'}) for the "
                    f"learner's {'first ' if step == 0 else 'next '}step event (after step {step}); backlog: "
                    + ", ".join(f"{s}={self._safe_backlog(s)}" for s in STREAMS)
                    + f"; {_where_time_goes(job_id)}"
                )

    def _check_health(self, spec: JobSpec, unhealthy_since: float | None, now: float) -> float | None:
        """Fail the job on a stage problem that cannot heal; wait up to
        ``timeouts.stage_recovery_s`` for one that heals by itself (a replica being replaced,
        the feedback actor restarting). Returns since when a stage has been recovering."""
        health = self.stages.health(self.job_id)
        if health is None:
            if unhealthy_since is not None:
                self.store.add_event(
                    self.job_id, "stage_recovered", {"after_s": round(now - unhealthy_since, 1)}
                )
            return None
        if not health.recovering:
            raise JobFailure(health.problem)
        if unhealthy_since is None:
            log.warning("job %s: %s; waiting for it to recover", self.job_id, health.problem)
            self.store.add_event(self.job_id, "stage_recovering", {"problem": health.problem})
            return now
        if now - unhealthy_since > spec.timeouts.stage_recovery_s:
            raise JobFailure(
                f"waited {spec.timeouts.stage_recovery_s:.0f}s (timeouts.stage_recovery_s) for a stage to "
                f"recover: {health.problem}"
            )
        return unhealthy_since

    def _record(self, ev, offset: int, typed: TypedSections | None = None) -> int:
        """Store one learner event (its step shifted by ``offset``, the step the learner run
        resumed from). For a StepDone, returns the groups that learner run has taken off the
        streams: trained, dropped as stale, or found already trained into the checkpoint it
        restored (those it dead-lettered are counted with the dead letters)."""
        job_id = self.job_id
        consumed = 0
        if isinstance(ev, StepDone):
            local = ev.step
            ev.step += offset
            m = {k: float(v) for k, v in ev.metrics.items()}
            gps = typed.learner.groups_per_step if typed is not None else 0
            consumed = local * gps + int(m.get("dropped_stale", 0)) + int(m.get("already_trained", 0))
            self.store.add_metrics(job_id, ev.step, m)
            self.store.set_progress(job_id, step=ev.step, policy_version=ev.policy_version)
            self.store.add_event(
                job_id, "step", {"step": ev.step, "policy_version": ev.policy_version, "metrics": m}
            )
            self.observer.step(job_id, ev.step, m)
        elif isinstance(ev, WeightsUpdated):
            self.store.set_progress(job_id, policy_version=ev.policy_version)
        elif isinstance(ev, CheckpointWritten):
            ev.step += offset
            self.store.add_checkpoint(job_id, ev.step, ev.policy_version, ev.path)
            self.store.add_event(job_id, "checkpoint", {"step": ev.step, "path": ev.path})
        elif isinstance(ev, JobFailed | JobFinished):
            ev.step += offset
        return consumed

    def _drain_events(self, offset: int, typed: TypedSections | None = None, quiet_s: float = 1.0) -> None:
        """Record the learner events still on the stream (until it stays empty for ``quiet_s``)."""
        events = self.bus.consumer(self.job_id, "events", group="gateway", name="driver")
        while True:
            batch = events.read(count=64, block_s=quiet_s)
            if not batch:
                return
            for d in batch:
                self._record(d.value, offset, typed)
            events.ack(batch)

    @staticmethod
    def _next_eval(spec: JobSpec, step: int) -> int | None:
        every = spec.evaluation.every_steps
        if not every:
            return None
        nxt = (step // every + 1) * every
        return nxt if nxt < spec.steps else None

    def _group(self, job_id: str, task: Task, group_id: str, spec: JobSpec) -> Group:
        return Group(
            job_id=job_id,
            group_id=group_id,
            prompt_text=task.prompt,
            task_id=task.id,
            metadata={"task": task.model_dump_json()},
        )

    def _dead_letters(self) -> int:
        from distil.bus import names

        total = 0
        for s in STREAMS:
            key = names.dead_letter_key(self.bus.stream(self.job_id, s))
            total += self.bus.call(f"reading the length of {key}", lambda r, k=key: r.xlen(k))
        return total

    def _stream_totals(self) -> tuple[int, int]:
        """(entries on the job's streams, dead letters), read in one transaction, so that a
        group moving to the next stream meanwhile is counted once."""
        from distil.bus import names

        keys = [self.bus.stream(self.job_id, s) for s in STREAMS]

        def read(r) -> tuple[int, int]:
            with r.pipeline(transaction=True) as p:
                for key in keys:
                    p.xlen(key)
                for key in keys:
                    p.xlen(names.dead_letter_key(key))
                counts = p.execute()
            return sum(counts[: len(keys)]), sum(counts[len(keys) :])

        return self.bus.call("counting the entries on the job's streams", read)

    def _safe_backlog(self, stream: str) -> int:
        try:
            return self.bus.backlog(self.job_id, stream)
        except Exception:
            return -1

    def _pending(self, stream: str) -> int:
        """Entries delivered to the stream's consumer group and not yet committed."""
        key = self.bus.stream(self.job_id, stream)
        try:
            groups = self.bus.call(f"reading the groups of {key}", lambda r: r.xinfo_groups(key))
        except Exception:  # the stream does not exist yet
            return 0
        return sum(int(g.get("pending", 0)) for g in groups)

    def _sample_recent(self, job_id: str) -> None:
        """Peek at the newest scored groups (without consuming them) for GET .../samples."""
        key = self.bus.stream(job_id, "scored")
        try:
            rows = self.bus.call(f"peeking at {key}", lambda r: r.xrevrange(key, count=2))
        except Exception:
            return
        out = []
        for _, fields in rows:
            try:
                if b"b" in fields:  # payload stored beside the entry
                    blob = self.bus.call("reading a payload", lambda r, k=fields[b"b"]: r.get(k))
                    if blob is None:
                        continue
                    fields = {**fields, b"d": blob}
                g = from_fields(fields)
            except Exception:
                continue
            if not isinstance(g, Group):
                continue
            for r in g.responses[:4]:
                fb = r.feedback
                out.append(
                    {
                        "group_id": g.group_id,
                        "task_id": g.task_id,
                        "policy_version": g.policy_version,
                        "prompt": g.prompt_text[:2000],
                        "response": r.text[:4000],
                        "reward": fb.reward if fb else None,
                        "success": fb.success if fb else None,
                        "feedback_text": (fb.feedback_text[:4000] if fb else ""),
                        "solution_text": (fb.solution_text[:2000] if fb else ""),
                        "teacher_k": r.teacher.k if r.teacher is not None else 0,
                        "teacher_mean_top1_logprob": (
                            float(r.teacher.top_logprobs[:, 0].mean())
                            if r.teacher is not None and len(r.teacher.top_logprobs)
                            else None
                        ),
                    }
                )
        seen = {s.get("group_id") for s in self.store.samples(job_id, limit=8)}
        self.store.add_samples(job_id, [s for s in out if s["group_id"] not in seen])

    def _evaluate_safely(self, spec: JobSpec, held_out: list[Task], model_dir: Path, step: int) -> None:
        """An evaluation that fails is reported (event ``eval_failed``) but does not end training."""
        try:
            self._evaluate(spec, held_out, model_dir, step)
        except Exception as exc:
            log.warning("evaluation of %s at step %d failed: %s", self.job_id, step, exc)
            self.store.add_event(
                self.job_id, "eval_failed", {"step": step, "error": f"{type(exc).__name__}: {exc}"}
            )

    def _evaluate(self, spec: JobSpec, held_out: list[Task], model_dir: Path, step: int) -> None:
        """avg@k, pass@k, maj@k, best@k on the held-out split, sampled by the rollout service's
        current policy and graded on the private tests."""
        from distil.metrics import ProblemResult, summarize
        from distil.templates import chat_prompt_ids

        ev = spec.evaluation
        tokenizer = _tokenizer(model_dir)
        deadline = time.monotonic() + spec.timeouts.eval_s

        def evaluate(task: Task) -> ProblemResult:
            if time.monotonic() > deadline:
                raise JobFailure(
                    f"evaluation at step {step} took longer than timeouts.eval_s ({spec.timeouts.eval_s:.0f}s); "
                    + _where_time_goes(self.job_id)
                )
            # The rollouts' prompt for this task (one user turn), with the job's thinking switch.
            ids = chat_prompt_ids(
                tokenizer, [{"role": "user", "content": task.prompt}], enable_thinking=spec.enable_thinking
            )
            remaining = max(1.0, deadline - time.monotonic())
            choices = self.stages.generate(self.job_id, list(ids), n=ev.k, temperature=ev.temperature,
                                           top_p=ev.top_p, max_tokens=ev.max_tokens, seed=spec.seed,
                                           timeout_s=remaining)  # fmt: skip
            texts = [c["text"] for c in choices]
            grades = self.stages.grade(self.job_id, task.model_dump(mode="json"), texts,
                                       [c["finish_reason"] == "length" for c in choices], remaining)  # fmt: skip
            return ProblemResult(
                scores=[1.0 if g["success"] else 0.0 for g in grades],
                accuracies=[g["fraction"] for g in grades],
                # maj@k votes on the verifier's answer key, not the text (#22 item 7).
                answers=[g["answer_key"] for g in grades],
            )

        # All problems at once, so the engine batches them (continuous batching) instead of
        # generating one problem's k samples at a time.
        tasks = held_out[: ev.max_problems]
        with ThreadPoolExecutor(max_workers=max(1, min(len(tasks), EVAL_CONCURRENCY))) as pool:
            problems = list(pool.map(evaluate, tasks))
        if not problems:
            return
        metrics = summarize(problems, [k for k in (1, 2, 4, 8, 16) if k <= ev.k])
        metrics["problems"] = float(len(problems))
        self.store.add_metrics(self.job_id, step, metrics, kind="eval")
        solved = {t.id: sum(p.scores) for t, p in zip(tasks, problems, strict=True)}  # of ev.k samples
        self.store.add_event(
            self.job_id, "eval", {"step": step, "metrics": metrics, "solved": solved, "k": ev.k}
        )
        self.observer.eval(self.job_id, metrics)


def _where_time_goes(job_id: str) -> str:
    """What a timeout message adds: the slowest stage so far and the machine (a CPU that
    emulates bf16 is the usual reason a stage is many times slower than expected)."""
    from distil.hardware import detect
    from distil.timeline import job_timeline, slowest_note

    return f"{slowest_note(job_timeline(job_id))}; this machine: {detect().describe()} (see `distil doctor`)"


_TOKENIZERS: dict[str, Any] = {}
EVAL_CONCURRENCY = 32  # held-out problems in flight at once during an evaluation


def _tokenizer(model_dir: Path):
    key = str(model_dir)
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(key)
    return _TOKENIZERS[key]


class Scheduler:
    """Runs queued jobs, ``max_active`` at a time (default 1), in submission order; on start
    it re-attaches drivers to the jobs a previous gateway left starting or running."""

    def __init__(self, store: JobStore, stages: ServeStages, bus: Bus, observer: Observer,
                 *, max_active: int = 1, poll_s: float = 0.5) -> None:  # fmt: skip
        self.store, self.stages, self.bus, self.observer = store, stages, bus, observer
        self.max_active, self.poll_s = max_active, poll_s
        self.drivers: dict[str, JobDriver] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        for d in self.drivers.values():
            d.stop_event.set()
        self.thread.join(timeout=10)
        for d in self.drivers.values():  # each returns within one poll (or its current call)
            d.thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.poll_s)

    def _tick(self) -> None:
        for job_id, d in list(self.drivers.items()):
            if not d.thread.is_alive():
                del self.drivers[job_id]
        for job in self.store.active():  # left by a previous gateway, or ours
            if job.id not in self.drivers:
                self._launch(job)
        while len(self.drivers) < self.max_active:
            job = self.store.next_queued()
            if job is None:
                return
            self._launch(job)

    def _launch(self, job: JobRecord) -> None:
        driver = JobDriver(self.store, self.stages, self.bus, job, self.observer)
        self.drivers[job.id] = driver
        if job.state == "queued":
            self.store.transition(job.id, "starting")
        driver.start()
