"""The generated demo tasks: held-out problems never appear in training, and every
reference solution passes its own tests in the real sandbox while a wrong one does not."""

from __future__ import annotations

from distil.demo import FAMILIES, make_split, make_tasks
from distil.demo.tasks import SECRET, secret_tasks
from services.feedback.grading import Grader


def test_split_is_disjoint_and_covers_every_family():
    train, held = make_split()
    assert {t.id for t in train}.isdisjoint({t.id for t in held})
    assert {t.prompt for t in train}.isdisjoint({t.prompt for t in held})
    assert len(train) + len(held) == len(make_tasks()) == sum(len(f.params) for f in FAMILIES)
    assert {t.metadata["family"] for t in held} == {f.name for f in FAMILIES}
    assert make_split(seed=0) == make_split(seed=0)  # deterministic
    assert [t.id for t in make_split(seed=1)[1]] != [t.id for t in held]
    # The never-solved regime's rule family is not in the demo: its prompts do not say the rule.
    assert SECRET not in FAMILIES and {t.metadata["family"] for t in secret_tasks()} == {SECRET.name}
    assert all("secret rule number" in t.prompt and "*" not in t.prompt for t in secret_tasks())


def test_reference_solutions_pass_and_wrong_ones_fail():
    grader = Grader()
    try:
        for task in make_tasks() + secret_tasks():
            assert len(task.public_tests) == 3 and len(task.private_tests) == 5
            good = f"```python\n{task.reference_solution}```"
            bad = "```python\ndef f(*args):\n    return None\n```"
            for split in ("public", "private"):
                fb = grader.grade_group(task, [good, bad], split=split)
                assert [r.success for r in fb.responses] == [True, False], (task.id, split)
    finally:
        grader.close()


def test_demo_spec_is_a_valid_job(tmp_path):
    from distil.demo.run import demo_spec, write_splits
    from distil.gateway.spec import validate_spec

    train, held = write_splits(tmp_path, seed=0)
    spec, typed = validate_spec(demo_spec(train, held, steps=4, seed=1))
    assert spec.evaluation.at_start and spec.evaluation.at_end and spec.steps == 4 and spec.seed == 1
    assert spec.objective.name == "distil" and spec.rollout.n == 4
    assert typed.learner.groups_per_step == 4


def test_an_interrupted_demos_job_is_cancelled_not_resumed(tmp_path):
    from fastapi.testclient import TestClient
    from rich.console import Console

    from distil.demo.run import cancel_leftovers, demo_spec, write_splits
    from distil.gateway.app import create_app
    from distil.jobs import JobStore

    train, held = write_splits(tmp_path, seed=0)
    store = JobStore(tmp_path / "jobs.sqlite3")
    left = store.create(demo_spec(train, held, steps=4, seed=0), name="demo-distil-s0")
    store.transition(left.id, "starting")
    store.transition(left.id, "running")
    other = store.create(demo_spec(train, held, steps=4, seed=0), name="my-own-job")
    with TestClient(create_app(store, "t")) as http:

        class Client:  # GatewayClient's request() over the in-process app
            def request(self, method, path, **kw):
                r = http.request(method, path, headers={"Authorization": "Bearer t"}, **kw)
                assert r.status_code < 400, r.text
                return r.json()

        console = Console(record=True)
        cancel_leftovers(Client(), console)
    assert store.get(left.id).cancel_requested or store.get(left.id).state == "cancelled"
    assert store.get(other.id).state == "queued"  # not ours: left alone
    assert left.id in console.export_text()
    store.close()
