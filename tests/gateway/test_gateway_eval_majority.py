"""maj@k of a job's evaluation votes on the verifier's answer key (#22 item 7). Before, the
driver voted on the whole whitespace-normalised response text: samples worded differently
never agreed, so every vote was a tie and went to sample 0, and maj@k was the score of the
first sample. The driver's real ``_evaluate`` with a stand-in rollout service (fixed texts)
and the real grading path (``grade_samples``: Grader, verifiers, bubblewrap sandbox)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from distil.data import Task
from distil.gateway.driver import JobDriver
from distil.gateway.feedback_worker import grade_samples
from distil.gateway.spec import validate_spec
from distil.jobs import JobStore
from services.feedback.config import FeedbackConfig
from services.feedback.grading import Grader
from services.feedback.sandbox import SandboxConfig, SandboxUnavailable, make_sandbox
from tests.models.conftest import smollm2_dir, tiny_model_dir  # noqa: F401  (shared session fixtures)

K = 4
MATH = Task(id="m", prompt="What is 2 + 2?", verifier="math", answer="4")
CODE = Task(
    id="c",
    prompt="Read n, print 2n.",
    public_tests=[{"kind": "stdio", "input": "3\n", "output": "6\n"}],
    private_tests=[
        {"kind": "stdio", "input": "1\n", "output": "2\n"},
        {"kind": "stdio", "input": "5\n", "output": "10\n"},
    ],
)


def fenced(code: str) -> str:
    return f"My program:\n```python\n{code}\n```\n"


class FixedStages:
    """A rollout service that answers with fixed texts, graded by the real feedback path."""

    def __init__(self, texts: list[str], grader: Grader) -> None:
        self.texts, self.grader = texts, grader

    def generate(self, job, prompt_ids, *, n, **kwargs):
        assert n == len(self.texts)
        return [{"text": t, "finish_reason": "stop"} for t in self.texts]

    def grade(self, job, task, texts, truncated, timeout_s):
        return grade_samples(self.grader, task, texts, truncated)


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    try:  # uids of its own (the feedback tests' sandboxes use 63000 and 63500)
        sandbox = make_sandbox(SandboxConfig(backend="bwrap", slots=2, uid_base=63900))
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap unavailable here: {exc}")
    g = Grader(FeedbackConfig(sources=[]), sandbox=sandbox)
    yield g
    g.close()


def evaluate(task: Task, texts: list[str], grader: Grader, model_dir, tmp_path) -> dict[str, float]:
    spec, _ = validate_spec({"evaluation": {"k": K}})
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create({"evaluation": {"k": K}})
    observer = SimpleNamespace(eval=lambda job_id, metrics: None)
    driver = JobDriver(store, FixedStages(texts, grader), None, job, observer)
    driver._evaluate(spec, [task], model_dir, step=1)
    (row,) = store.metrics(job.id, kind="eval")
    store.close()
    return row


MATH_FIRST_WRONG = [
    "2 + 2 = 5, so \\boxed{5}",
    "Adding two and two gives \\boxed{4}.",
    "The answer is 4.",
    "Final answer: 4",
]
MATH_FIRST_RIGHT = [
    "Adding two and two gives \\boxed{4}.",
    "The answer is 4.",
    "2 + 2 = 5, so \\boxed{5}",
    "Final answer: 4",
]


@pytest.mark.parametrize("texts", [MATH_FIRST_WRONG, MATH_FIRST_RIGHT], ids=["5/4/4/4", "4/4/5/4"])
def test_math_maj_votes_on_the_extracted_answer_in_any_order(texts, grader, tiny_model_dir, tmp_path):  # noqa: F811
    out = evaluate(MATH, texts, grader, tiny_model_dir, tmp_path)
    assert out["score/avg"] == 0.75
    assert out["score/maj@4"] == 1.0  # three samples say 4; before: 0.0 for 5/4/4/4 (sample 0)


RIGHT = [fenced("print(2 * int(input()))"), fenced("n = int(input())\nprint(n + n)")]
SQUARE = [fenced("n = int(input())\nprint(n * n)"), fenced("x = int(input().strip())\nprint(x ** 2)")]
ECHO = fenced("print(input())")


def test_code_maj_votes_on_the_behaviour_on_the_tests(grader, tiny_model_dir, tmp_path):  # noqa: F811
    # A wrong first sample, then three right programs, no two alike as text.
    out = evaluate(CODE, [ECHO, RIGHT[0], RIGHT[1], fenced("print(int(input()) * 2)")], grader, tiny_model_dir,
                   tmp_path)  # fmt: skip
    assert out["score/maj@4"] == 1.0  # before: 0.0 (sample 0)
    # A right first sample, then two different programs that both square: they outvote it.
    out = evaluate(CODE, [RIGHT[0], SQUARE[0], SQUARE[1], ECHO], grader, tiny_model_dir, tmp_path)
    assert out["score/pass@4"] == 1.0
    assert out["score/maj@4"] == 0.0  # before: 1.0 (sample 0)
    assert out["score/maj@1"] == pytest.approx(0.25)


class SlowStages(FixedStages):
    def generate(self, job, prompt_ids, *, n, **kwargs):
        import time

        time.sleep(1.5)  # past timeouts.eval_s before the problems after the first batch start
        return super().generate(job, prompt_ids, n=n, **kwargs)


def test_an_evaluation_past_its_timeout_names_the_slowest_stage_and_the_cpu(
    grader,
    tiny_model_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import json

    from distil.gateway.driver import EVAL_CONCURRENCY, JobFailure
    from distil.hardware import detect

    monkeypatch.setenv("DISTIL_DATA_DIR", str(tmp_path / "data"))
    raw = {"evaluation": {"k": K, "max_problems": None}, "timeouts": {"eval_s": 1.0}}
    spec, _ = validate_spec(raw)
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create(raw)
    timeline = tmp_path / "data" / "jobs" / job.id / "timeline.jsonl"
    timeline.parent.mkdir(parents=True)
    spans = {"learner": [[0.0, 5.0]], "teacher": [[0.0, 90.0]], "rollout": [[0.0, 20.0]]}
    timeline.write_text(json.dumps({"spans": spans}) + "\n")
    driver = JobDriver(store, SlowStages(["\\boxed{4}"] * K, grader), None, job, SimpleNamespace())
    with pytest.raises(JobFailure) as err:
        driver._evaluate(spec, [MATH] * (EVAL_CONCURRENCY + 1), tiny_model_dir, step=0)
    store.close()
    msg = str(err.value)
    assert "timeouts.eval_s (1s)" in msg
    assert "slowest stage so far: teacher at 90.0 busy s/step" in msg
    assert detect().describe() in msg
