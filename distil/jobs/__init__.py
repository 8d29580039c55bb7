"""Jobs: the job spec, the persisted job store and the prompt feeder (no Ray, no services)."""

from distil.jobs.feeder import Cursor, Issue, PromptFeeder
from distil.jobs.spec import (
    CheckpointSpec,
    DatasetSpec,
    EvaluationSpec,
    JobSpec,
    PlacementSpec,
    SpecError,
    TimeoutSpec,
    field_errors,
    load_spec_file,
    parse_document,
)
from distil.jobs.store import ACTIVE, FINAL, InvalidTransition, JobNotFound, JobRecord, JobStore

__all__ = [
    "ACTIVE",
    "FINAL",
    "CheckpointSpec",
    "Cursor",
    "DatasetSpec",
    "EvaluationSpec",
    "InvalidTransition",
    "Issue",
    "JobNotFound",
    "JobRecord",
    "JobSpec",
    "JobStore",
    "PlacementSpec",
    "PromptFeeder",
    "SpecError",
    "TimeoutSpec",
    "field_errors",
    "load_spec_file",
    "parse_document",
]
