"""Feedback sources over whole groups, including a real external endpoint (the reference
endpoint app on a local uvicorn server) answering at once, through the callback, or never."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from distil.data import Task
from services.feedback.app import create_app
from services.feedback.callbacks import CallbackRegistry
from services.feedback.config import FeedbackConfig
from services.feedback.grading import Grader
from services.feedback.reference_endpoint import create_app as create_reference_endpoint
from services.feedback.sources import SourceConfig

from .conftest import serve_http

TASK = Task(
    id="double",
    prompt="Read n, print 2n.",
    public_tests=[
        {"kind": "stdio", "input": "2\n", "output": "4\n"},
        {"kind": "stdio", "input": "5\n", "output": "10\n"},
    ],
    reference_solution="print(2 * int(input()))",
)
GOOD = "```python\nprint(2 * int(input()))\n```"
GOOD_THINKING = "<think>easy</think>```python\nn = int(input())\nprint(n + n)\n```"
BAD = "```python\nprint(int(input()) + 3)\n```"
NO_CODE = "Just double it."


@pytest.fixture(scope="module")
def grader(sandbox):
    g = Grader(FeedbackConfig(sources=[]), sandbox=sandbox)
    yield g
    g.pool.shutdown()


def test_sources_config_is_a_discriminated_union():
    adapter = TypeAdapter(list[SourceConfig])
    parsed = adapter.validate_python(
        [
            {"kind": "environment"},
            {"kind": "sibling", "strip_thinking": False},
            {"kind": "reference"},
            {"kind": "external", "url": "http://x"},
        ]
    )
    assert [p.kind for p in parsed] == ["environment", "sibling", "reference", "external"]
    with pytest.raises(ValidationError, match="kind"):
        adapter.validate_python([{"kind": "oracle"}])
    with pytest.raises(ValidationError, match="url"):
        adapter.validate_python([{"kind": "external"}])


def test_environment_and_sibling(grader):
    result = grader.grade_group(
        TASK, [BAD, GOOD_THINKING, NO_CODE, GOOD], sources=[{"kind": "environment"}, {"kind": "sibling"}]
    )
    bad, good_thinking, no_code, good = result.responses
    assert [r.reward for r in result.responses] == [0.0, 1.0, 0.0, 1.0]
    assert bad.feedback.startswith("Wrong answer.") and "Expected:\n4" in bad.feedback
    assert no_code.feedback and "```python" in no_code.feedback
    assert good.feedback is None
    # The first successful sibling other than itself, thinking stripped.
    assert bad.solution.startswith("```python\nn = int(input())") and "<think>" not in bad.solution
    assert good_thinking.solution == GOOD  # a success never gets itself
    assert good.solution.startswith("```python\nn = int(input())")
    assert result.counters["successes"] == 2 and result.counters["groups_with_sibling"] == 1


def test_reference_solution_fills_in_when_no_sibling(grader):
    result = grader.grade_group(
        TASK, [BAD, NO_CODE], sources=[{"kind": "environment"}, {"kind": "sibling"}, {"kind": "reference"}]
    )
    assert all(r.solution == "```python\nprint(2 * int(input()))\n```" for r in result.responses)
    assert all(r.texts.keys() == {"environment", "reference"} for r in result.responses)
    missing = grader.grade_group(
        TASK.model_copy(update={"reference_solution": None}), [BAD], sources=[{"kind": "reference"}]
    )
    assert missing.responses[0].solution is None and missing.counters["reference_missing"] == 1


def test_external_endpoint_sync(grader):
    endpoint = create_reference_endpoint(mode="sync")
    with serve_http(endpoint) as url:
        result = grader.grade_group(
            TASK,
            [BAD, GOOD],
            sources=[
                {"kind": "environment"},
                {"kind": "external", "url": f"{url}/feedback", "timeout_s": 10},
            ],
        )
    bad, good = result.responses
    assert bad.external == "answered" and bad.texts["external"].startswith(
        "Reviewer: the answer fails 2 of 2"
    )
    assert (
        bad.feedback.startswith("Wrong answer.") and "Reviewer:" in bad.feedback
    )  # environment, then external
    assert good.external == "answered" and good.feedback is None
    assert result.counters["external_answered"] == 2 and len(endpoint.state.received) == 2


def test_external_endpoint_can_set_the_reward(grader):
    app = FastAPI()

    @app.post("/grade")
    def review(body: dict) -> dict:
        return {"feedback": "meh", "reward": 0.5}

    with serve_http(app) as url:
        result = grader.grade_group(
            TASK, [BAD], sources=[{"kind": "external", "url": f"{url}/grade", "use_reward": True}]
        )
    assert result.responses[0].reward == 0.5 and result.responses[0].feedback == "meh"


def test_external_endpoint_answers_through_the_callback(sandbox):
    callbacks = CallbackRegistry()
    service = create_app(FeedbackConfig(sources=[]))
    state = service.state.feedback
    state.callbacks = callbacks
    with serve_http(service) as service_url:
        grader = Grader(
            FeedbackConfig(sources=[], callback_base_url=service_url), sandbox=sandbox, callbacks=callbacks
        )
        endpoint = create_reference_endpoint(mode="callback", delay_s=0.3)
        with serve_http(endpoint) as url:
            result = grader.grade_group(
                TASK, [BAD], sources=[{"kind": "external", "url": f"{url}/feedback", "timeout_s": 10}]
            )
        grader.pool.shutdown()
    item = result.responses[0]
    assert item.external == "answered" and item.feedback.startswith("Reviewer:")
    assert state.counters["callback_accepted"] == 1


def test_external_endpoint_timeout_proceeds_and_is_counted(sandbox):
    callbacks = CallbackRegistry()
    grader = Grader(
        FeedbackConfig(sources=[], callback_base_url="http://127.0.0.1:9"),
        sandbox=sandbox,
        callbacks=callbacks,
    )
    endpoint = create_reference_endpoint(mode="callback", delay_s=30)  # answers far too late
    with serve_http(endpoint) as url:
        result = grader.grade_group(
            TASK,
            [BAD, GOOD],
            sources=[
                {"kind": "environment"},
                {"kind": "external", "url": f"{url}/feedback", "timeout_s": 0.5},
            ],
        )
    grader.pool.shutdown()
    assert [r.external for r in result.responses] == ["timed_out", "timed_out"]
    assert result.counters["external_timed_out"] == 2
    assert result.responses[0].feedback.startswith("Wrong answer.")  # proceeded without it
    assert result.responses[0].reward == 0.0 and result.responses[1].reward == 1.0


def test_unreachable_endpoint_is_counted_as_failed(grader):
    result = grader.grade_group(
        TASK, [BAD], sources=[{"kind": "external", "url": "http://127.0.0.1:9/feedback", "timeout_s": 2}]
    )
    assert result.responses[0].external == "failed" and result.counters["external_failed"] == 1
