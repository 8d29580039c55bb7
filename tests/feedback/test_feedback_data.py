"""The JSONL task format and its loader."""

from __future__ import annotations

import json

import pytest

from distil.data import CallTest, StdioTest, Task, load_tasks

ROWS = [
    {
        "id": "sum-1",
        "prompt": "sum",
        "public_tests": [{"kind": "stdio", "input": "1 2\n", "output": "3\n"}],
        "private_tests": [{"kind": "call", "fn": "total", "args": [[1, 2]], "expected": 3}],
        "reference_solution": "print(3)",
    },
    {"id": "m-1", "prompt": "1/2+1/3?", "verifier": "math", "answer": "\\frac{5}{6}"},
    {"id": "q-1", "prompt": "?", "verifier": "mcq", "choices": ["a", "b", "c"], "answer": "C"},
    {"id": "c-1", "prompt": "?", "verifier": "custom", "verifier_url": "http://x/verify"},
]


def write(tmp_path, rows):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n")
    return path


def test_load_tasks(tmp_path):
    tasks = load_tasks(write(tmp_path, ROWS))
    assert [t.id for t in tasks] == ["sum-1", "m-1", "q-1", "c-1"]
    code = tasks[0]
    assert isinstance(code.public_tests[0], StdioTest) and isinstance(code.private_tests[0], CallTest)
    assert len(code.tests("public")) == 1 and code.tests("private")[0].fn == "total"
    only_public = Task(id="x", prompt="p", public_tests=[{"kind": "stdio", "output": "1"}])
    assert only_public.tests("private") == only_public.tests("public")


@pytest.mark.parametrize(
    "row,message",
    [
        ({"id": "a", "prompt": "p"}, "public_tests or private_tests"),
        ({"id": "a", "prompt": "p", "verifier": "math"}, "needs an answer"),
        ({"id": "a", "prompt": "p", "verifier": "custom"}, "verifier_url"),
        ({"id": "a", "prompt": "p", "public_tests": [{"kind": "oracle"}]}, "public_tests.0"),
        ({"id": "a", "prompt": "p", "public_tests": [{"kind": "stdio"}]}, "output"),
        ({"id": "a", "prompt": "p", "verifer": "code"}, "verifer"),
        ("{not json", "not valid JSON"),
    ],
)
def test_errors_name_the_line_and_field(tmp_path, row, message):
    path = write(tmp_path, [ROWS[1], row])
    with pytest.raises(ValueError, match=message) as err:
        load_tasks(path)
    assert ":2:" in str(err.value)


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate task id 'm-1'"):
        load_tasks(write(tmp_path, [ROWS[1], ROWS[1]]))
