"""The review queue against a real Redis: parking is idempotent, reviews are recorded once
and only before the deadline, a group reaches the feedback stream exactly once (with the
reviews merged in, or without them once expired), and everything survives a reconnect
and a Redis restart."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from distil.bus import Bus, Feedback, Group, Response, TestResult
from services.feedback.review_queue import AlreadyReviewed, ItemExpired, ItemNotFound, ReviewQueue, group_key
from services.feedback.sources.human import HumanSourceConfig, Review, select
from tests.conftest import fast_bus_config


def graded_group(job: str, gid: str, *, ok: tuple[bool, ...] = (False, True)) -> Group:
    responses = []
    for i, success in enumerate(ok):
        responses.append(
            Response(
                token_ids=np.arange(3, dtype=np.int32),
                logprobs=np.zeros(3, np.float32),
                text=f"```python\nprint({i})\n```",
                feedback=Feedback(
                    reward=float(success),
                    success=success,
                    tests=[TestResult("test_0", "passed" if success else "failed", float(success), "WA")],
                    feedback_text="" if success else "Wrong answer on input 2: expected 4, got 0.",
                    solution_text="```python\nprint(2 * int(input()))\n```" if not success else "",
                ),
            )
        )
    return Group(
        job_id=job, group_id=gid, prompt_text="Read n, print 2n.", task_id="double", responses=responses
    )


def feedback_groups(bus: Bus, job: str) -> list[Group]:
    teacher = bus.consumer(job, "feedback", group="teacher")
    got = teacher.read(count=100, block_s=0.1)
    teacher.ack(got)
    return [d.group for d in got]


def park(queue: ReviewQueue, group: Group, config: HumanSourceConfig) -> list[str]:
    chosen = select(config, group.group_id, [r.feedback.success for r in group.responses])
    assert queue.park(group, chosen, config, "code")
    return [f"{group_key(group.group_id)}-{i}" for i in chosen]


def test_selection_all_failures_and_seeded_fraction():
    ok = [True, False, False, True]
    assert select(HumanSourceConfig(selection="all"), "g", ok) == [0, 1, 2, 3]
    assert select(HumanSourceConfig(selection="failures"), "g", ok) == [1, 2]
    frac = HumanSourceConfig(selection="fraction", fraction=0.3, seed=7)
    picks = [select(frac, f"g{i}", [False] * 8) for i in range(200)]
    assert picks == [select(frac, f"g{i}", [False] * 8) for i in range(200)]  # deterministic
    share = sum(len(p) for p in picks) / (200 * 8)
    assert 0.25 < share < 0.35
    other_seed = [select(frac.model_copy(update={"seed": 8}), f"g{i}", [False] * 8) for i in range(200)]
    assert other_seed != picks


def test_park_list_submit_release_merges_review(bus, job_id):
    q = ReviewQueue(bus, job_id)
    config = HumanSourceConfig(deadline_s=60)
    group = graded_group(job_id, "g1")
    (item,) = park(q, group, config)
    assert not q.park(group, [0], config, "code")  # parked once, whatever happens after a crash
    pending = q.pending()
    assert [p["item"] for p in pending] == [item]
    assert pending[0]["task_id"] == "double" and pending[0]["success"] is False
    assert 55 < pending[0]["seconds_left"] <= 60
    shown = q.item(item)
    assert shown["state"] == "pending" and shown["response"] == "```python\nprint(0)\n```"
    assert shown["feedback"].startswith("Wrong answer") and shown["tests"][0]["status"] == "failed"
    assert q.due() == []  # nothing due before the review or the deadline

    review = Review(
        verdict="reject",
        feedback="You print a constant; read n and print 2*n.",
        solution="print(2*int(input()))",
    )
    assert q.submit(item, review) == {
        "item": item,
        "state": "reviewed",
        "group_complete": True,
        "duplicate": False,
    }
    assert q.submit(item, review)["duplicate"] is True  # a retried request is answered, not recorded twice
    with pytest.raises(AlreadyReviewed):
        q.submit(item, Review(verdict="accept"))
    assert q.pending() == []

    out = bus.stream(job_id, "feedback")
    assert q.due() == [group_key("g1")]
    assert q.release(group_key("g1"), out) == "reviewed"
    assert q.release(group_key("g1"), out) is None  # exactly once
    (sent,) = feedback_groups(bus, job_id)
    fb = sent.responses[0].feedback
    assert fb.feedback_text == (
        "Wrong answer on input 2: expected 4, got 0.\n\nYou print a constant; read n and print 2*n."
    )
    assert fb.solution_text == "```python\nprint(2*int(input()))\n```"  # the correction, fenced
    assert fb.reward == 0.0  # verdict_sets_reward is off
    assert sent.responses[1].feedback.feedback_text == ""  # not selected: untouched
    assert json.loads(sent.metadata["human_review"]) == {"verdicts": {"0": "reject"}, "expired": []}
    assert q.item(item)["state"] == "reviewed" and q.item(item)["review"]["verdict"] == "reject"
    stats = q.stats()
    assert stats["items_reviewed"] == 1 and stats["items_rejected"] == 1 and stats["groups_released"] == 1
    assert stats["pending_items"] == 0 and stats["parked_groups"] == 0 and "items_expired" not in stats


def test_text_only_review_replaces_the_automatic_demonstration_unless_kept(bus, job_id):
    out = bus.stream(job_id, "feedback")
    for gid, keep in (("drop", False), ("keep", True)):
        q = ReviewQueue(bus, job_id)
        config = HumanSourceConfig(keep_demonstration=keep, verdict_sets_reward=True)
        (item,) = park(q, graded_group(job_id, gid), config)
        q.submit(item, Review(verdict="accept", feedback="Fine, but name the variable."))
        assert q.release(group_key(gid), out) == "reviewed"
    drop, keep = feedback_groups(bus, job_id)
    assert drop.responses[0].feedback.solution_text == ""
    assert keep.responses[0].feedback.solution_text.startswith("```python")
    assert drop.responses[0].feedback.success and drop.responses[0].feedback.reward == 1.0  # verdict sets it


def test_unknown_and_malformed_items(bus, job_id):
    q = ReviewQueue(bus, job_id)
    (item,) = park(q, graded_group(job_id, "g1"), HumanSourceConfig())
    for bad in ("nope", f"{group_key('g1')}-1", f"{group_key('other')}-0", "../../etc"):
        with pytest.raises(ItemNotFound):
            q.item(bad)
        with pytest.raises(ItemNotFound):
            q.submit(bad, Review(verdict="accept"))
    assert q.item(item)["state"] == "pending"


def test_deadline_expires_items_and_the_group_goes_on_without_them(bus, job_id):
    q = ReviewQueue(bus, job_id)
    config = HumanSourceConfig(selection="all", deadline_s=0.5)
    first, second = park(q, graded_group(job_id, "g1"), config)
    q.submit(first, Review(verdict="reject", feedback="Off by one."))
    assert q.due() == []  # one item still open, deadline ahead
    time.sleep(0.6)
    assert q.pending() == []  # an item past its deadline is no longer offered
    assert q.item(second)["state"] == "expired"
    with pytest.raises(ItemExpired, match="deadline passed"):
        q.submit(second, Review(verdict="accept"))
    assert q.release(group_key("g1"), bus.stream(job_id, "feedback")) == "expired"
    (sent,) = feedback_groups(bus, job_id)
    assert sent.responses[0].feedback.feedback_text.endswith("Off by one.")  # the answered one is used
    assert sent.responses[1].feedback.feedback_text == ""  # the expired one went on as graded
    assert json.loads(sent.metadata["human_review"]) == {"verdicts": {"0": "reject"}, "expired": [1]}
    stats = q.stats()
    assert stats["items_expired"] == 1 and stats["groups_expired"] == 1 and stats["groups_released"] == 1
    with pytest.raises(ItemExpired):
        q.submit(second, Review(verdict="accept"))


def test_concurrent_submissions_record_exactly_one(bus, job_id):
    q = ReviewQueue(bus, job_id)
    (item,) = park(q, graded_group(job_id, "g1"), HumanSourceConfig())
    results: list[str] = []
    barrier = threading.Barrier(8)

    def reviewer(n: int) -> None:
        mine = ReviewQueue(Bus(fast_bus_config(bus.url)), job_id)  # own connection, like another gateway
        barrier.wait()
        try:
            mine.submit(item, Review(verdict="reject", feedback=f"reviewer {n}"))
            results.append("ok")
        except AlreadyReviewed:
            results.append("409")
        finally:
            mine.bus.close()

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["409"] * 7 + ["ok"]
    assert q.stats()["items_reviewed"] == 1
    assert len(q.due()) == 1


def test_submit_racing_the_deadline_is_all_or_nothing(bus, job_id):
    """At the deadline a submission and the release race; either the review is recorded
    and reaches the teacher, or it is refused as expired and the group goes on without
    it -- never both, never a lost or doubled group."""
    q = ReviewQueue(bus, job_id)
    out = bus.stream(job_id, "feedback")
    outcomes = {}
    for n in range(12):
        gid = f"race-{n}"
        (item,) = park(q, graded_group(job_id, gid), HumanSourceConfig(deadline_s=0.2))
        time.sleep(0.4 * n / 11)  # from well before to well after the deadline
        answer: list[str] = []

        def reviewer(item=item, answer=answer, n=n) -> None:
            try:
                q.submit(item, Review(verdict="reject", feedback=f"late note {n}"))
                answer.append("reviewed")
            except ItemExpired:
                answer.append("expired")

        t = threading.Thread(target=reviewer)
        t.start()
        released = None
        deadline = time.monotonic() + 5
        while released is None and time.monotonic() < deadline:
            released = q.release(group_key(gid), out)
        t.join(timeout=10)
        assert released is not None, f"group {gid} was never released"
        outcomes[gid] = (answer[0], released)
    assert {a for a, _ in outcomes.values()} == {"reviewed", "expired"}, outcomes  # both sides happened
    sent = {g.group_id: g for g in feedback_groups(bus, job_id)}
    assert sorted(sent) == sorted(outcomes)  # every group exactly once
    for gid, (answer, released) in outcomes.items():
        text = sent[gid].responses[0].feedback.feedback_text
        if answer == "reviewed":
            assert released == "reviewed" and text.endswith(f"late note {gid.split('-')[1]}")
        else:
            assert released == "expired" and "late note" not in text


def test_queue_survives_a_reconnect_and_a_redis_restart(restartable_redis, job_id):
    config = fast_bus_config(restartable_redis.url)
    with Bus(config) as first:
        (item,) = park(ReviewQueue(first, job_id), graded_group(job_id, "g1"), HumanSourceConfig())
    with Bus(config) as second:  # a restarted feedback worker / gateway: new connection, same queue
        q = ReviewQueue(second, job_id)
        assert [p["item"] for p in q.pending()] == [item]
        restartable_redis.kill()  # SIGKILL: only what the AOF (fsync always) holds survives
        restartable_redis.start()
        assert [p["item"] for p in q.pending()] == [item]
        q.submit(item, Review(verdict="accept", feedback="ok"))
        restartable_redis.kill()
        restartable_redis.start()
        assert q.release(group_key("g1"), second.stream(job_id, "feedback")) == "reviewed"
        (sent,) = feedback_groups(second, job_id)
        assert sent.responses[0].feedback.feedback_text.endswith("ok")
