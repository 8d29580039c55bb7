"""Tasks from a Hugging Face dataset, read with ``datasets.load_dataset``: a hub id
(``org/name``, with a configuration), a local dataset directory (one data file per split,
or a directory written by ``save_to_disk``) or one local data file (.parquet, .json,
.jsonl, .csv, .arrow: a single ``train`` split). :class:`HFFields` says which column holds
each part of a :class:`~distil.data.tasks.Task`; errors name the dataset, the split, the
row and the column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .tasks import Task

HFVerifier = Literal["code", "math", "mcq"]
FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class HFFields(BaseModel):
    """The column of each part of a task (None: the dataset has none)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="task ids; None = '<split>-<row number>'.")
    prompt: str = Field(default="prompt", description="what the model sees.")
    tests: str | None = Field(
        default=None,
        description="code: a list of task tests (docs/feedback.md, 'Task format') or its JSON text; "
        "with `entry_point`, HumanEval-style code defining check(candidate).",
    )
    private_tests: str | None = Field(
        default=None, description="code: held-back tests in the same form; None = `tests` for both."
    )
    entry_point: str | None = Field(
        default=None, description="code: the function the check code of `tests` is called with."
    )
    answer: str | None = Field(
        default=None, description="math: the final answer; mcq: the correct letter or its 0-based index."
    )
    choices: str | None = Field(default=None, description="mcq: the option texts.")
    reference_solution: str | None = Field(default=None, description="for the `reference` feedback source.")
    code_prefix: str | None = Field(
        default=None, description="code: placed before the response's code (HumanEval: the prompt)."
    )

    def columns(self) -> dict[str, str]:
        """``{field: column}`` of the fields that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def problems(self, verifier: HFVerifier) -> list[tuple[str, str]]:
        """(field, message) for what ``verifier`` needs and the mapping lacks."""
        out = []
        if verifier == "code" and not (self.tests or self.private_tests):
            out.append(("tests", "a code dataset needs the column of its tests (fields.tests)"))
        if verifier in ("math", "mcq") and not self.answer:
            out.append(("answer", f"a {verifier} dataset needs the column of its answers (fields.answer)"))
        if verifier == "mcq" and not self.choices:
            out.append(("choices", "an mcq dataset needs the column of its options (fields.choices)"))
        if self.entry_point and not (self.tests or self.private_tests):
            out.append(
                ("entry_point", "fields.entry_point goes with fields.tests (HumanEval-style check code)")
            )
        return out


def load_hf_tasks(path: str, *, config: str | None, split: str, fields: HFFields, verifier: HFVerifier,
                  limit: int | None = None, cache_dir: str | Path | None = None) -> list[Task]:  # fmt: skip
    """The tasks of one split (the first ``limit`` rows if given); raises ``ValueError``
    with what is wrong: no such file, a split the dataset does not have, a missing column,
    a row that does not make a valid task, or the hub unreachable."""
    where = f"hf dataset {path!r}" + (f" (config {config!r})" if config else "") + f" split {split!r}"
    problems = fields.problems(verifier)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(f"fields.{f}: {msg}" for f, msg in problems))
    ds = _load(path, config, split, cache_dir, where)
    missing = {f: c for f, c in fields.columns().items() if c not in ds.column_names}
    if missing:
        wanted = ", ".join(f"fields.{f} = {c!r}" for f, c in missing.items())
        raise ValueError(f"{where} has no column for {wanted}; its columns are {ds.column_names}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    tasks: list[Task] = []
    seen: set[str] = set()
    for i, row in enumerate(ds):
        try:
            task = _task(row, i, split, fields, verifier, path)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(task)'}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"{where} row {i}: not a valid task: {problems}") from None
        except ValueError as exc:
            raise ValueError(f"{where} row {i}: {exc}") from None
        if task.id in seen:
            raise ValueError(f"{where} row {i}: duplicate task id {task.id!r} (fields.id = {fields.id!r})")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def _load(path: str, config: str | None, split: str, cache_dir, where: str):
    from datasets import load_dataset

    local = Path(path).expanduser()
    cache = str(cache_dir) if cache_dir is not None else None
    if local.is_file():
        builder = FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{where}: {local.name} is not a data file datasets can read "
                f"({', '.join(sorted(FILE_BUILDERS))}); use one of those or a dataset directory"
            )
        if split != "train":
            raise ValueError(
                f"{where}: a single data file has one split, 'train'; for other splits use a "
                f"directory with one file per split (e.g. {split}.parquet)"
            )
        args, kwargs = (builder,), {"data_files": str(local)}
    elif local.is_dir():
        args, kwargs = (str(local),), {"name": config}
    elif path.startswith(("/", ".", "~")):
        raise ValueError(f"{where}: no such file or directory")
    else:
        args, kwargs = (path,), {"name": config}  # a hub id
    try:
        return load_dataset(*args, split=split, cache_dir=cache, **kwargs)
    except ValueError as exc:
        if "Unknown split" in str(exc):
            raise ValueError(f"{where}: the dataset has no split {split!r} ({exc})") from None
        raise ValueError(f"{where}: {exc}") from None
    except Exception as exc:
        hint = "" if local.exists() else " (not a local path, so it was looked up on the Hugging Face hub)"
        raise ValueError(f"{where}: could not be loaded{hint}: {type(exc).__name__}: {exc}") from None


def _task(row: dict[str, Any], i: int, split: str, fields: HFFields, verifier: HFVerifier, path: str) -> Task:
    prompt = row[fields.prompt]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"column {fields.prompt!r} (fields.prompt) is empty or not text: {prompt!r}")
    data: dict[str, Any] = {
        "id": str(row[fields.id]) if fields.id else f"{split}-{i}",
        "prompt": prompt,
        "verifier": verifier,
        "metadata": {"source": "hf", "dataset": path, "split": split, "row": i},
    }
    entry_point = row[fields.entry_point] if fields.entry_point else None
    if fields.tests:
        data["public_tests"] = _tests(row[fields.tests], fields.tests, entry_point)
    if fields.private_tests:
        data["private_tests"] = _tests(row[fields.private_tests], fields.private_tests, entry_point)
    if fields.answer:
        data["answer"] = _answer(row[fields.answer], verifier)
    if fields.choices:
        data["choices"] = [str(c) for c in row[fields.choices] or []]
    for key in ("reference_solution", "code_prefix"):
        column = getattr(fields, key)
        if column and row[column] is not None:
            data[key] = str(row[column])
    return Task.model_validate(data)


def _tests(value: Any, column: str, entry_point: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if entry_point is not None:
        return [{"kind": "check", "code": str(value), "entry_point": str(entry_point)}]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"column {column!r} holds text that is not JSON ({exc}); tests are a list of task "
                "tests or its JSON, or HumanEval check code with fields.entry_point"
            ) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError(f"column {column!r} is not a list of task tests: {str(value)[:200]}")
    return value


def _answer(value: Any, verifier: HFVerifier) -> str:
    if value is None:
        raise ValueError(f"the answer of a {verifier} task is missing")
    if verifier == "mcq" and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(LETTERS):
            raise ValueError(f"mcq answer index {value} is out of range")
        return LETTERS[value]
    return str(value)
