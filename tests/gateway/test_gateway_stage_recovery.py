"""The driver's policy for unhealthy stages (no Ray): a stage that heals by itself (a Serve
replica being replaced, the feedback actor restarting) is waited for, up to
``timeouts.stage_recovery_s``, with events in the job's history; one that cannot heal fails
the job at once, naming it."""

from __future__ import annotations

import pytest

from distil.gateway.driver import JobDriver, JobFailure
from distil.gateway.stages import StageHealth
from distil.jobs import JobStore
from distil.jobs.spec import JobSpec

REPLACING = StageHealth("the rollout service of job j is UNHEALTHY: a replica's health check failed", True)
DELETED = StageHealth("the teacher service of job j is gone (distil-j-teacher)", False)


class ScriptedHealth:
    """What ServeStages.health answers, one reply per check."""

    def __init__(self, *replies: StageHealth | None) -> None:
        self.replies = list(replies)

    def health(self, job: str) -> StageHealth | None:
        return self.replies.pop(0)


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def driver(store: JobStore, stages) -> JobDriver:
    job = store.create({})
    return JobDriver(store, stages, None, job, None)


def test_a_recovering_stage_is_waited_for_and_recorded(store):
    d = driver(store, ScriptedHealth(REPLACING, REPLACING, None))
    spec = JobSpec(timeouts={"stage_recovery_s": 60})
    since = d._check_health(spec, None, now=100.0)
    assert since == 100.0
    assert d._check_health(spec, since, now=150.0) == 100.0  # still within 60 s
    assert d._check_health(spec, since, now=155.0) is None
    kinds = [(e["kind"], e["data"]) for e in store.events(d.job_id) if e["kind"].startswith("stage_")]
    assert kinds == [
        ("stage_recovering", {"problem": REPLACING.problem}),
        ("stage_recovered", {"after_s": 55.0}),
    ]


def test_a_stage_that_does_not_recover_in_time_fails_the_job_naming_it(store):
    d = driver(store, ScriptedHealth(REPLACING, REPLACING))
    spec = JobSpec(timeouts={"stage_recovery_s": 60})
    since = d._check_health(spec, None, now=100.0)
    with pytest.raises(
        JobFailure, match=r"waited 60s \(timeouts.stage_recovery_s\).*rollout service.*UNHEALTHY"
    ):
        d._check_health(spec, since, now=161.0)


def test_a_stage_that_cannot_heal_fails_the_job_at_once(store):
    d = driver(store, ScriptedHealth(DELETED))
    with pytest.raises(JobFailure, match="teacher service of job j is gone"):
        d._check_health(JobSpec(), None, now=100.0)
