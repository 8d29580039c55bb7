"""Training rollouts sample the full tempered distribution (#22 item 4): vLLM's log-probs after
top-p / top-k are renormalised over the kept tokens, the learner only re-applies the
temperature, so every ratio would be <= 1 (GRPO's clip then zeroes negative-advantage
tokens). A job that sets them for ``rollout`` is refused with the field path; evaluation
may use them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from distil.gateway.app import create_app
from distil.gateway.spec import validate_spec
from distil.jobs import JobStore
from services.rollout.stage import RolloutConfig
from tests.gateway.spec_errors import errors_of

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "rollout, loc", [({"top_p": 0.95}, "rollout.top_p"), ({"top_k": 50}, "rollout.top_k")]
)
def test_truncated_sampling_for_training_rollouts_is_refused_naming_the_field(rollout, loc):
    errors = errors_of({"rollout": rollout})
    assert set(errors) == {loc}, errors
    assert "evaluation" in errors[loc] and "ratio" in errors[loc]


def test_both_truncations_are_reported_at_once():
    assert set(errors_of({"rollout": {"top_p": 0.5, "top_k": 20}})) == {"rollout.top_p", "rollout.top_k"}


def test_the_default_and_full_distribution_rollouts_pass_and_evaluation_may_truncate():
    spec, _ = validate_spec({})
    assert (spec.rollout.top_p, spec.rollout.top_k) == (1.0, 0)  # a default the validator accepts
    validate_spec({"rollout": {"top_p": 1.0, "top_k": 0, "temperature": 0.7}})
    spec, _ = validate_spec({"evaluation": {"top_p": 0.8}})
    assert spec.evaluation.top_p == 0.8


def test_http_submission_gets_422_with_the_field_path(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    with TestClient(create_app(store, TOKEN)) as client:
        r = client.post("/v1/jobs", headers=AUTH, json={"rollout": {"top_p": 0.9}})
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == ["rollout.top_p"]
        assert client.post("/v1/jobs", headers=AUTH, json={"evaluation": {"top_p": 0.9}}).status_code == 201
    store.close()


def test_the_rollout_service_refuses_truncated_training_sampling_too():
    """Another path into training sampling: a rollout service deployed with its own config."""
    engine = {"model": "/models/m"}
    for sampling in ({"top_p": 0.9}, {"top_k": 40}):
        with pytest.raises(ValidationError, match="evaluation"):
            RolloutConfig.model_validate({"engine": engine, "sampling": sampling})
    assert RolloutConfig.model_validate({"engine": engine}).sampling.top_p == 1.0
