"""Hugging Face datasets as a job's tasks (``dataset.kind: hf``): parquet and JSON data
written here are read through ``datasets.load_dataset`` (this machine has no hub access),
mapped onto tasks by the job spec's field mapping, and graded by the real verifiers; a
wrong mapping, split, path or row fails with what is wrong."""

from __future__ import annotations

import gzip
import json

import pytest

from distil.data.humaneval import humaneval_path, load_humaneval
from distil.gateway.driver import JobFailure, load_dataset
from distil.gateway.spec import validate_spec
from distil.jobs.spec import JobSpec, SpecError


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """datasets' Arrow cache in the test's directory, not the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def grader():
    from services.feedback.config import FeedbackConfig
    from services.feedback.grading import Grader
    from services.feedback.sandbox import SandboxConfig

    return Grader(FeedbackConfig(sources=[], sandbox=SandboxConfig(slots=1, uid_base=64300)))


def write(path, rows: list[dict]) -> str:
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset.from_list(rows)
    ds.to_json(str(path)) if path.suffix in (".json", ".jsonl") else ds.to_parquet(str(path))
    return str(path)


def square_rows(names: range) -> list[dict]:
    return [
        {
            "task_id": f"sq-{i}",
            "question": f"Write square{i}(x) that returns x * x.",
            "tests": json.dumps([{"kind": "call", "fn": f"square{i}", "args": [3], "expected": 9}]),
            "hidden": [{"kind": "call", "fn": f"square{i}", "args": [4], "expected": 16}],
            "solution": f"def square{i}(x):\n    return x * x\n",
        }
        for i in names
    ]


CODE_FIELDS = {"id": "task_id", "prompt": "question", "tests": "tests", "private_tests": "hidden",
               "reference_solution": "solution"}  # fmt: skip


def spec(**dataset) -> JobSpec:
    return JobSpec.model_validate({"dataset": {"kind": "hf", **dataset}})


def test_code_dataset_directory_with_train_and_test_splits(tmp_path, grader):
    root = tmp_path / "squares"
    write(root / "train.parquet", square_rows(range(4)))
    write(root / "test.parquet", square_rows(range(4, 6)))
    train, held_out = load_dataset(spec(path=str(root), eval_split="test", fields=CODE_FIELDS))
    assert [t.id for t in train] == ["sq-0", "sq-1", "sq-2", "sq-3"]
    assert [t.id for t in held_out] == ["sq-4", "sq-5"]
    task = train[1]
    assert task.verifier == "code" and task.prompt.startswith("Write square1(x)")
    assert task.public_tests[0].kind == "call" and task.public_tests[0].args == [3]  # from JSON text
    assert task.private_tests[0].expected == 16  # from a list of records
    assert task.reference_solution.startswith("def square1")
    assert task.metadata == {"source": "hf", "dataset": str(root), "split": "train", "row": 1}
    right = "```python\ndef square1(x):\n    return x * x\n```"
    wrong = "```python\ndef square1(x):\n    return x + x\n```"
    assert grader.grade(task, right, split="private").success
    assert not grader.grade(task, wrong, split="private").success
    # without eval_split the held-out tasks are the tail of the training split
    train, held_out = load_dataset(spec(path=str(root), eval_fraction=0.25, fields=CODE_FIELDS, limit=4))
    assert [t.id for t in train] == ["sq-0", "sq-1", "sq-2"] and [t.id for t in held_out] == ["sq-3"]


def test_math_json_file_and_mcq_parquet_file(tmp_path, grader):
    math_file = write(tmp_path / "math.jsonl", [{"q": f"What is {i} + 2?", "a": i + 2} for i in range(3)])
    train, _ = load_dataset(
        spec(path=math_file, verifier="math", eval_fraction=0.0, fields={"prompt": "q", "answer": "a"})
    )
    assert [(t.id, t.answer) for t in train] == [("train-0", "2"), ("train-1", "3"), ("train-2", "4")]
    assert grader.grade(train[2], "2 + 2 = 4, so \\boxed{4}").success
    assert not grader.grade(train[2], "\\boxed{5}").success

    rows = [{"question": "Which is a prime?", "options": ["4", "6", "7", "9"], "label": 2}]
    mcq_file = write(tmp_path / "mcq.parquet", rows)
    fields = {"prompt": "question", "choices": "options", "answer": "label"}
    train, _ = load_dataset(spec(path=mcq_file, verifier="mcq", eval_fraction=0.0, fields=fields))
    assert train[0].answer == "C" and train[0].choices == ["4", "6", "7", "9"]  # index 2 -> letter C
    assert grader.grade(train[0], "Answer: C").success
    assert not grader.grade(train[0], "Answer: A").success


def test_humaneval_style_columns_with_check_code(tmp_path, grader):
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][:2]
    write(tmp_path / "he" / "test.parquet", rows)
    fields = {"id": "task_id", "prompt": "prompt", "tests": "test", "entry_point": "entry_point",
              "code_prefix": "prompt", "reference_solution": "canonical_solution"}  # fmt: skip
    train, _ = load_dataset(spec(path=str(tmp_path / "he"), split="test", eval_fraction=0.0, fields=fields))
    packaged = load_humaneval()[:2]
    assert [t.id for t in train] == [t.id for t in packaged]
    assert [t.public_tests for t in train] == [t.public_tests for t in packaged]
    assert train[0].code_prefix == packaged[0].code_prefix
    solution = f"```python\n{rows[0]['canonical_solution']}```"
    assert grader.grade(train[0], solution, split="private").success


def failure(tmp_path, **dataset) -> str:
    with pytest.raises(JobFailure) as err:
        load_dataset(spec(**dataset))
    return str(err.value)


def test_clear_errors_for_columns_splits_paths_and_rows(tmp_path):
    root = tmp_path / "squares"
    write(root / "train.parquet", square_rows(range(3)))
    write(root / "test.parquet", square_rows(range(3, 4)))

    msg = failure(tmp_path, path=str(root), fields={**CODE_FIELDS, "prompt": "statement"})
    assert "no column for fields.prompt = 'statement'" in msg and "'question'" in msg  # lists the columns

    msg = failure(tmp_path, path=str(root), eval_split="validation", fields=CODE_FIELDS)
    assert msg.startswith("dataset.eval_split:") and "no split 'validation'" in msg
    assert "train" in msg and "test" in msg  # the splits it has
    assert "no split 'dev'" in failure(tmp_path, path=str(root), split="dev", fields=CODE_FIELDS)

    assert "no such file or directory" in failure(
        tmp_path, path=str(tmp_path / "nowhere"), fields=CODE_FIELDS
    )
    one_file = str(root / "train.parquet")
    assert "one split, 'train'" in failure(tmp_path, path=one_file, split="test", fields=CODE_FIELDS)
    (tmp_path / "notes.txt").write_text("hello\n")
    assert "not a data file" in failure(tmp_path, path=str(tmp_path / "notes.txt"), fields=CODE_FIELDS)

    bad = square_rows(range(3))
    bad[1]["tests"] = "assert square1(3) == 9"  # not JSON, and no entry_point
    write(tmp_path / "bad" / "train.parquet", bad)
    msg = failure(tmp_path, path=str(tmp_path / "bad"), fields=CODE_FIELDS)
    assert "row 1" in msg and "not JSON" in msg

    dup = square_rows(range(2))
    dup[1]["task_id"] = "sq-0"
    write(tmp_path / "dup" / "train.parquet", dup)
    assert "duplicate task id 'sq-0'" in failure(tmp_path, path=str(tmp_path / "dup"), fields=CODE_FIELDS)

    write(tmp_path / "noanswer.jsonl", [{"q": "What is 1 + 1?", "a": None}])
    msg = failure(
        tmp_path,
        path=str(tmp_path / "noanswer.jsonl"),
        verifier="math",
        fields={"prompt": "q", "answer": "a"},
    )
    assert "row 0" in msg and "answer" in msg


@pytest.mark.parametrize(
    ("dataset", "needle"),
    [
        ({"kind": "hf"}, "needs dataset.path"),
        ({"kind": "hf", "path": "org/name"}, "dataset.fields.tests"),  # a code dataset without tests
        ({"kind": "hf", "path": "org/name", "verifier": "math"}, "dataset.fields.answer"),
        (
            {"kind": "hf", "path": "o/n", "verifier": "mcq", "fields": {"answer": "a"}},
            "dataset.fields.choices",
        ),
        (
            {
                "kind": "hf",
                "path": "o/n",
                "fields": {"tests": "t"},
                "eval_split": "test",
                "eval_path": "x.jsonl",
            },
            "set one",
        ),
        ({"kind": "humaneval", "split": "test"}, "dataset.split applies to dataset.kind 'hf' only"),
        ({"kind": "hf", "path": "o/n", "fields": {"tests": "t", "tset": "x"}}, "dataset.fields.tset"),
    ],
)
def test_invalid_hf_specs_are_rejected_at_submission(dataset, needle):
    with pytest.raises(SpecError) as err:
        validate_spec({"dataset": dataset})
    assert needle in str(err.value)
    assert all(e["loc"].startswith("dataset") for e in err.value.errors)


def test_a_stored_spec_with_every_default_validates_again():
    """The job store keeps specs with defaults filled in; hf-only defaults must not trip other kinds."""
    stored, _ = validate_spec({"dataset": {"kind": "humaneval"}})
    data = stored.model_dump(mode="json")
    data["objective"] = stored.objective.model_dump(mode="json", exclude_unset=True)
    assert validate_spec(data)[0].dataset == stored.dataset
