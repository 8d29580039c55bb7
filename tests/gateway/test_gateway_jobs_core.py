"""The job spec, the job store and the prompt feeder (no Ray, no Redis)."""

from __future__ import annotations

import pytest

from distil.gateway.spec import validate_spec
from distil.jobs import Cursor, InvalidTransition, JobStore, PromptFeeder, parse_document
from tests.gateway.spec_errors import errors_of


def test_defaults_follow_the_paper():
    spec, typed = validate_spec({})
    assert spec.rollout.n == 8 and spec.rollout.temperature == 1.0
    assert (spec.evaluation.k, spec.evaluation.temperature, spec.evaluation.top_p) == (4, 0.6, 0.95)
    assert typed.learner.groups_per_step == 32 and typed.training.lr == 1e-6
    assert typed.teacher.kind == "self_ema" and typed.training.teacher_ema_rate == typed.teacher.rate


def test_yaml_and_json_parse_alike():
    text = "steps: 5\nobjective:\n  name: sdpo\n"
    assert parse_document(text, "application/yaml") == parse_document(
        '{"steps": 5, "objective": {"name": "sdpo"}}'
    )
    assert validate_spec(parse_document(text))[0].objective.alpha == 1.0  # SDPO coding: reverse KL


@pytest.mark.parametrize(
    "doc, loc",
    [
        ({"rollout": {"n": 0}}, "rollout.n"),
        ({"teacher": {"kind": "oracle"}}, "teacher"),
        ({"teacher": {"kind": "external"}}, "teacher.external.url"),
        ({"training": {"lr": -1}}, "training.lr"),
        ({"learner": {"groups_per_step": 0}}, "learner.groups_per_step"),
        ({"engine": {"max_model_len": 8}}, "engine.max_model_len"),
        ({"dataset": {"kind": "jsonl"}}, "dataset"),
        ({"objective": {"name": "grpo", "alpha": 0.5}}, "objective"),
        ({"bogus": 1}, "bogus"),
        ({"objective": {"name": "grpo"}, "rollout": {"n": 1}}, "rollout.n"),
        ({"feedback": {"sources": [{"kind": "telepathy"}]}}, "feedback.sources.0"),
    ],
)
def test_invalid_specs_name_the_field(doc, loc):
    errors = errors_of(doc)
    assert any(k == loc or k.startswith(loc + ".") for k in errors), errors


def test_text_only_teacher_with_a_divergence_objective_is_rejected():
    for objective in ("sdpo", "opsd"):
        errors = errors_of(
            {
                "objective": {"name": objective},
                "teacher": {"kind": "black_box", "url": "http://t", "form": "sampled_tokens"},
            }
        )
        assert "log-probs" in errors["teacher.kind"]
    # The same teacher works with DistIL (a cross-entropy to sampled tokens).
    validate_spec({"teacher": {"kind": "black_box", "url": "http://t", "form": "sampled_tokens"}})


def test_store_states_persist_across_reopen(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    a = store.create({"steps": 2})
    b = store.create({"steps": 3})
    assert store.next_queued().id == a.id
    store.transition(a.id, "starting")
    store.transition(a.id, "running")
    with pytest.raises(InvalidTransition):
        store.transition(a.id, "starting")
    store.add_metrics(a.id, 1, {"loss": 0.5})
    store.add_checkpoint(a.id, 1, 1, "/ckpt/1")
    store.add_samples(a.id, [{"group_id": "g", "reward": 1.0}])
    store.save_cursor(a.id, Cursor(epoch=0, index=4, issued=4).to_dict())
    store.request_cancel(b.id)  # queued: cancelled at once
    store.close()

    again = JobStore(path)
    job = again.get(a.id)
    assert job.state == "running" and Cursor.from_dict(job.cursor).issued == 4
    assert again.metrics(a.id)[0]["loss"] == 0.5
    assert again.checkpoints(a.id)[0]["path"] == "/ckpt/1"
    assert again.samples(a.id)[0]["reward"] == 1.0
    assert again.get(b.id).state == "cancelled"
    assert [j.id for j in again.active()] == [a.id]
    assert again.request_cancel(a.id).cancel_requested
    again.transition(a.id, "failed", "learner failed: boom")
    assert again.get(a.id).reason == "learner failed: boom"
    assert again.transition(a.id, "queued").state == "queued"  # resume
    assert [e["kind"] for e in again.events(a.id)][:1] == ["state"]


def test_feeder_epochs_seeded_shuffles_and_resume():
    full = PromptFeeder(5, seed=3, epochs=2)
    order = [(i.task_index, i.group_id) for i in full.take(100)]
    assert len(order) == 10 and sorted(t for t, _ in order[:5]) == list(range(5))
    assert len({g for _, g in order}) == 10
    assert order[:5] != order[5:]  # epochs are shuffled differently
    first = PromptFeeder(5, seed=3, epochs=2)
    head = [(i.task_index, i.group_id) for i in first.take(3)]
    resumed = PromptFeeder(5, seed=3, epochs=2, cursor=Cursor.from_dict(first.cursor.to_dict()))
    assert head + [(i.task_index, i.group_id) for i in resumed.take(100)] == order
    assert resumed.exhausted
    assert PromptFeeder(5, seed=4, epochs=1).take(5) != PromptFeeder(5, seed=3, epochs=1).take(5)
