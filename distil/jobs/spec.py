"""The job spec: what a user submits to train one model (JSON or YAML).

Defaults follow the paper's coding setting (Tables 3-4: 8 rollouts per question, 32
questions per step, sampling temperature 1.0, validation with 4 rollouts at temperature
0.6 and top-p 0.95). Every default is written once: here for what the core owns
(model, dataset, sampling, evaluation, checkpoints), in the service's own config class
for what a service owns. Sections that a service owns (``teacher``, ``feedback``,
``training``, ``learner``, ``engine``) are plain mappings in the core spec and typed by
the gateway (:mod:`distil.gateway.spec`), which may import service configs; the core may not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distil.data.hf import HFFields, HFVerifier
from distil.engine.config import SamplingConfig
from distil.losses import ObjectiveConfig

JOB_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class DatasetSpec(BaseModel):
    """Where the tasks come from (task JSONL, see docs/feedback.md; the packaged HumanEval; or
    a Hugging Face dataset mapped onto tasks) and how they are split."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsonl", "humaneval", "hf"] = "humaneval"
    path: str | None = Field(
        default=None,
        description="jsonl: the training task file (one task per line); hf: a hub id 'org/name', "
        "a local dataset directory or one local data file (.parquet, .json, .jsonl, .csv, .arrow).",
    )
    eval_path: str | None = Field(
        default=None, description="held-out task file; None = hold out `eval_fraction` of the tasks."
    )
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    limit: int | None = Field(default=None, ge=1, description="use only the first N tasks (smoke runs).")
    # kind 'hf' only:
    config: str | None = Field(
        default=None, description="hf: the dataset configuration (load_dataset's name)."
    )
    split: str = Field(default="train", min_length=1, description="hf: the split to train on.")
    eval_split: str | None = Field(
        default=None, min_length=1, description="hf: the held-out split; None = eval_path or eval_fraction."
    )
    verifier: HFVerifier = Field(default="code", description="hf: how every task is verified.")
    fields: HFFields = Field(default_factory=HFFields, description="hf: the column of each part of a task.")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.kind in ("jsonl", "hf") and not self.path:
            what = "a task JSONL file" if self.kind == "jsonl" else "a hub id, dataset directory or data file"
            raise ValueError(f"dataset.kind {self.kind!r} needs dataset.path ({what})")
        if self.kind != "hf":  # (a stored spec carries every default, so compare with those)
            only_hf = [
                name
                for name in ("config", "split", "eval_split", "verifier", "fields")
                if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)
            ]
            if only_hf:
                verb = "applies" if len(only_hf) == 1 else "apply"
                raise ValueError(f"dataset.{', dataset.'.join(only_hf)} {verb} to dataset.kind 'hf' only")
            return self
        if self.eval_split and self.eval_path:
            raise ValueError("dataset.eval_split and dataset.eval_path both name the held-out tasks; set one")
        problems = self.fields.problems(self.verifier)
        if problems:
            raise ValueError("; ".join(f"dataset.fields.{f}: {msg}" for f, msg in problems))
        return self


class EvaluationSpec(BaseModel):
    """Held-out evaluation through the rollout service and the verifiers (Table 3, validation)."""

    model_config = ConfigDict(extra="forbid")

    every_steps: int = Field(default=10, ge=0, description="0 = never (only after the last step).")
    k: int = Field(default=4, ge=1, description="samples per problem (avg@k, pass@k, maj@k, best@k).")
    temperature: float = Field(default=0.6, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    max_problems: int | None = Field(default=64, ge=1, description="None = the whole held-out split.")
    at_start: bool = Field(
        default=False, description="also evaluate the initial policy before the first step (a baseline)."
    )
    at_end: bool = True


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_steps: int = Field(default=10, ge=1)
    keep_last: int = Field(default=3, ge=1)


class PlacementSpec(BaseModel):
    """Accelerators per service replica (0 = CPU) and how many replicas or ranks each stage runs.

    A replica with ``engine.tensor_parallel_size`` > 1 reserves that many whole GPUs; below 1
    GPU, stages share a GPU (Ray's fractional GPUs; vLLM's ``gpu_memory_utilization`` and the
    learner's budget decide whether they fit, see docs/deploy.md)."""

    model_config = ConfigDict(extra="forbid")

    rollout_gpus: float = Field(default=0.0, ge=0, description="GPUs per rollout replica.")
    rollout_replicas: int = Field(
        default=1, ge=1, description="data-parallel rollout engines, each receives every weight update."
    )
    teacher_gpus: float = Field(default=0.0, ge=0, description="GPUs per teacher replica.")
    teacher_replicas: int = Field(default=1, ge=1, description="teacher engines scoring in parallel.")
    learner_gpus: int = Field(default=0, ge=0, description="training ranks on GPUs; 0 = one CPU rank.")
    learner_gpus_per_rank: float = Field(
        default=1.0, gt=0, le=1, description="GPU share each training rank reserves (below 1: shares a GPU)."
    )
    feedback_cpus: float = Field(default=1.0, gt=0)


class TimeoutSpec(BaseModel):
    """How long the driver waits for each thing before failing the job with what it waited for."""

    model_config = ConfigDict(extra="forbid")

    stages_ready_s: float = Field(default=900.0, gt=0, description="stage deployments healthy.")
    first_step_s: float = Field(default=1800.0, gt=0, description="the learner's first StepDone.")
    step_s: float = Field(default=1800.0, gt=0, description="between two learner events.")
    eval_s: float = Field(default=1800.0, gt=0, description="one evaluation round.")
    stage_recovery_s: float = Field(
        default=600.0, gt=0, description="a stage healing itself (dead replica replaced, actor restarted)."
    )


class JobSpec(BaseModel):
    """A training job. ``name`` is optional; the gateway assigns the job id."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=JOB_NAME)
    model: str = Field(
        default="smollm2-135m-instruct",
        description="local Hugging Face directory, hub id 'org/name', or the packaged 'smollm2-135m-instruct'.",
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    rollout: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(n=8, temperature=1.0, max_tokens=512),
        description="G = rollout.n responses per prompt (Table 3: 8, temperature 1.0).",
    )
    enable_thinking: bool = Field(
        default=False,
        description="the chat template's thinking switch for every prompt of the job: rollouts, teacher "
        "contexts and evaluation (one setting, so the model is evaluated as it was trained).",
    )
    steps: int = Field(default=100, ge=1, description="training steps (optimizer updates).")
    epochs: int | None = Field(
        default=None, ge=1, description="stop feeding after this many passes over the data; None = as needed."
    )
    seed: int = 0
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    # Service-owned sections, typed by the gateway against each service's config class.
    engine: dict[str, Any] = Field(
        default_factory=dict, description="distil.engine.EngineConfig fields except model (rollout engine)."
    )
    teacher: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "self_ema"}, description="services.teacher TeacherConfig."
    )
    feedback: dict[str, Any] = Field(
        default_factory=dict,
        description="services.feedback: {'sources': [...]} (default: environment + sibling).",
    )
    training: dict[str, Any] = Field(default_factory=dict, description="services.learner TrainConfig.")
    learner: dict[str, Any] = Field(
        default_factory=dict,
        description="services.learner StageConfig (groups_per_step, max_staleness, ...) without checkpoint_every.",
    )
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)


class SpecError(ValueError):
    """An invalid job spec; ``errors`` are ``{"loc": "a.b", "msg": ...}`` with field paths."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))


def field_errors(exc: ValidationError, prefix: tuple = ()) -> list[dict[str, str]]:
    """Pydantic errors as field paths (``teacher.kind``, ``rollout.n``) and messages."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in (*prefix, *err["loc"])) or "(spec)"
        out.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return out


def parse_document(text: str | bytes, content_type: str = "") -> dict[str, Any]:
    """A JSON or YAML document as a mapping (YAML when the content type says so or JSON fails)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if "yaml" not in content_type:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        else:
            if not isinstance(data, dict):
                raise SpecError([{"loc": "(spec)", "msg": "a job spec must be a JSON/YAML object"}])
            return data
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([{"loc": "(spec)", "msg": f"neither valid JSON nor YAML: {exc}"}]) from None
    if not isinstance(data, dict):
        raise SpecError([{"loc": "(spec)", "msg": "a job spec must be a JSON/YAML object"}])
    return data


def with_defaults(document: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``document`` over ``defaults`` (a partial spec, e.g. a deployment's placement and engine
    settings): mappings merge key by key, anything else the document sets wins."""
    out = dict(defaults)
    for key, value in document.items():
        base = out.get(key)
        out[key] = with_defaults(value, base) if isinstance(value, dict) and isinstance(base, dict) else value
    return out


def load_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return parse_document(
        path.read_text(encoding="utf-8"), "yaml" if path.suffix in (".yaml", ".yml") else ""
    )
