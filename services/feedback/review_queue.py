"""A job's review queue in Redis: graded groups waiting for human reviewers.

Keys (all under ``{prefix}:{job}:review:``, so ``Bus.delete_job`` removes them):

| key | type | what |
|---|---|---|
| ``group:{gkey}`` | hash | one parked group: its graded payload, what the page shows per selected response (``v:{i}``), each item's state (``s:{i}``: pending, reviewed, expired) and review (``r:{i}``), the deadline, the source's config |
| ``items`` | sorted set | pending item ids by deadline (the list reviewers see) |
| ``due`` | sorted set | parked groups by deadline (what the releaser expires) |
| ``ready`` | set | parked groups whose every item is reviewed (released at once) |
| ``stats`` | hash | counters: groups/items parked, items reviewed/accepted/rejected/expired, groups released/expired |

An item id is ``{gkey}-{index}``: ``gkey`` is the first 16 hex digits of the SHA-1 of the
group id, ``index`` the response's index in the group.

Every change is one MULTI/EXEC guarded by WATCH on the group's hash, and every clock
reading is Redis's ``TIME``, so the gateway (submitting) and the feedback worker
(parking, releasing) agree on deadlines wherever they run:

* **park** writes the group only if its hash does not exist yet, so a group graded again
  after a crash (redelivered before its ack) is parked once;
* **submit** records a review only while the item is pending and its deadline has not
  passed (else :class:`ItemExpired`), once (:class:`AlreadyReviewed`; an identical
  resubmission, e.g. a client retrying, is answered as a success);
* **release** appends the merged group to the output stream and marks the group released
  in the same transaction, so it reaches the teacher exactly once; a released group's
  hash stays ``keep_s`` (without its payload) so late answers get a clear error.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import redis

from distil.bus import Bus, Group, decode_group, encode_group
from distil.bus.envelope import prepare

from .sources.human import HumanSourceConfig, Review, merge

ITEM_ID = re.compile(r"^([0-9a-f]{16})-(\d{1,5})$")
KEEP_S = 86_400.0  # how long a released group's hash answers for its items


class ReviewError(Exception):
    """A request about a review item that cannot be honoured; ``status`` is its HTTP code."""

    status = 400


class ItemNotFound(ReviewError):
    status = 404


class AlreadyReviewed(ReviewError):
    status = 409


class ItemExpired(ReviewError):
    status = 410


def group_key(group_id: str) -> str:
    return hashlib.sha1(group_id.encode()).hexdigest()[:16]


def item_id(gkey: str, index: int) -> str:
    return f"{gkey}-{index}"


def _s(raw: bytes | None) -> str | None:
    return raw.decode() if raw is not None else None


def _now(r) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def response_view(group: Group, index: int) -> dict[str, Any]:
    """What a reviewer sees of one response: its text, the verifier's results, the feedback so far."""
    r = group.responses[index]
    fb = r.feedback
    return {
        "response": r.text,
        "finish_reason": r.finish_reason,
        "reward": fb.reward if fb else None,
        "success": fb.success if fb else None,
        "tests": [
            {"name": t.name, "status": t.status, "message": t.message} for t in (fb.tests if fb else [])
        ],
        "feedback": fb.feedback_text if fb else "",
        "solution": fb.solution_text if fb else "",
    }


def prompt_of(group: Group) -> str:
    raw = group.metadata.get("messages")
    if raw:
        users = [m.get("content", "") for m in json.loads(raw) if m.get("role") == "user"]
        if users:
            return users[-1]
    return group.prompt_text


class ReviewQueue:
    """The review queue of job ``job`` on ``bus``'s Redis (cheap to construct: no I/O)."""

    def __init__(self, bus: Bus, job: str, *, keep_s: float = KEEP_S) -> None:
        self.bus = bus
        self.job = job
        self.keep_s = keep_s
        base = f"{bus.stream(job, 'review')}"
        self.items_key = f"{base}:items"
        self.due_key = f"{base}:due"
        self.ready_key = f"{base}:ready"
        self.stats_key = f"{base}:stats"
        self._group_prefix = f"{base}:group:"

    def group_key(self, gkey: str) -> str:
        return self._group_prefix + gkey

    def _parse(self, item: str) -> tuple[str, int]:
        m = ITEM_ID.fullmatch(item)
        if not m:
            raise ItemNotFound(
                f"no review item {item!r} in job {self.job}: ids look like '3f2a9c0d1e2b4a5c-0'"
            )
        return m.group(1), int(m.group(2))

    def _tx(self, what: str, key: str, body):
        """Run ``body(pipe)`` under WATCH ``key`` until it commits (redis-py transaction)."""

        def run(r: redis.Redis):
            while True:
                with r.pipeline(transaction=True) as p:
                    try:
                        p.watch(key)
                        return body(p)
                    except redis.WatchError:
                        continue

        return self.bus.call(what, run)

    # ------------------------------------------------------------------ feedback worker

    def park(self, group: Group, selected: list[int], config: HumanSourceConfig, verifier: str) -> bool:
        """Put a graded group in the queue with its selected responses as items. False when
        the group is (or was, within ``keep_s``) already in the queue: nothing is written."""
        if not selected:
            raise ValueError(f"group {group.group_id}: no response selected for review")
        gkey = group_key(group.group_id)
        key = self.group_key(gkey)
        fields: dict[str, Any] = {
            "group_id": group.group_id,
            "task_id": group.task_id,
            "verifier": verifier,
            "prompt": prompt_of(group),
            "size": str(len(group.responses)),
            "selected": json.dumps(selected),
            "config": config.model_dump_json(),
            "state": "pending",
            "payload": encode_group(group),
        }
        for i in selected:
            fields[f"s:{i}"] = "pending"
            fields[f"v:{i}"] = json.dumps(response_view(group, i))

        def body(p) -> bool:
            if p.exists(key):
                return False
            now = _now(p)
            deadline = now + config.deadline_s
            p.multi()
            p.hset(key, mapping={**fields, "created": repr(now), "deadline": repr(deadline)})
            p.zadd(self.due_key, {gkey: deadline})
            p.zadd(self.items_key, {item_id(gkey, i): deadline for i in selected})
            p.hincrby(self.stats_key, "groups_parked", 1)
            p.hincrby(self.stats_key, "items_parked", len(selected))
            p.execute()
            return True

        return self._tx(f"parking group {group.group_id} of job {self.job} for review", key, body)

    def due(self, limit: int = 64) -> list[str]:
        """Parked groups to release now: every item reviewed, or past the deadline."""

        def run(r: redis.Redis) -> list[str]:
            now = _now(r)
            ready = r.smembers(self.ready_key)
            expired = r.zrangebyscore(self.due_key, "-inf", now, start=0, num=limit)
            return sorted({g.decode() for g in (*ready, *expired)})

        return self.bus.call(f"reading the review groups of job {self.job} due for release", run)

    def release(self, gkey: str, out_key: str) -> str | None:
        """Append the group to ``out_key`` with the reviews merged into its feedback, if it is
        due; returns "reviewed" (every item answered), "expired" (some not) or None (not due,
        or released already)."""
        key = self.group_key(gkey)
        inline_max = self.bus.config.inline_max_bytes

        def body(p) -> str | None:
            h = p.hgetall(key)
            if not h or h.get(b"state") != b"pending":
                p.multi()
                p.zrem(self.due_key, gkey)
                p.srem(self.ready_key, gkey)
                p.execute()
                return None
            selected = json.loads(h[b"selected"])
            states = {i: _s(h.get(f"s:{i}".encode())) for i in selected}
            pending = [i for i, s in states.items() if s == "pending"]
            now = _now(p)
            if pending and now < float(h[b"deadline"]):
                p.reset()
                return None
            config = HumanSourceConfig.model_validate_json(h[b"config"])
            verifier = _s(h[b"verifier"]) or ""
            group = decode_group(h[b"payload"])
            verdicts = {}
            for i in selected:
                if states[i] == "reviewed":
                    stored = json.loads(h[f"r:{i}".encode()])
                    review = Review.model_validate({k: v for k, v in stored.items() if k != "at"})
                    verdicts[str(i)] = review.verdict
                    fb = group.responses[i].feedback
                    if fb is not None:
                        merge(fb, review, config, verifier)
            group.metadata["human_review"] = json.dumps({"verdicts": verdicts, "expired": pending})
            outcome = "expired" if pending else "reviewed"
            outgoing = prepare(group, inline_max)
            p.multi()
            outgoing.queue_xadd(p, out_key)
            update = {"state": "released", "released_at": repr(now), "outcome": outcome}
            update.update({f"s:{i}": "expired" for i in pending})
            p.hset(key, mapping=update)
            p.hdel(key, "payload")
            p.expire(key, max(1, int(self.keep_s)))
            p.zrem(self.due_key, gkey)
            p.srem(self.ready_key, gkey)
            if pending:
                p.zrem(self.items_key, *[item_id(gkey, i) for i in pending])
                p.hincrby(self.stats_key, "items_expired", len(pending))
                p.hincrby(self.stats_key, "groups_expired", 1)
            p.hincrby(self.stats_key, "groups_released", 1)
            p.execute()
            return outcome

        return self._tx(f"releasing review group {gkey} of job {self.job} to {out_key}", key, body)

    # ------------------------------------------------------------------ reviewers (gateway)

    def pending(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Items still open for review, soonest deadline first."""

        def run(r: redis.Redis) -> list[dict[str, Any]]:
            now = _now(r)
            rows = r.zrangebyscore(
                self.items_key, f"({now}", "+inf", start=offset, num=limit, withscores=True
            )
            parsed = [(i.decode(), *self._parse(i.decode()), score) for i, score in rows]
            with r.pipeline(transaction=False) as p:
                for _, gkey, index, _ in parsed:
                    p.hmget(self.group_key(gkey), "group_id", "task_id", "prompt", f"v:{index}")
                found = p.execute()
            out = []
            for (item, _, index, deadline), (gid, task, prompt, view) in zip(parsed, found, strict=True):
                if gid is None:  # released meanwhile
                    continue
                v = json.loads(view) if view else {}
                out.append(
                    {
                        "item": item,
                        "group_id": gid.decode(),
                        "task_id": _s(task) or "",
                        "index": index,
                        "deadline": deadline,
                        "seconds_left": max(0.0, deadline - now),
                        "prompt": (_s(prompt) or "")[:300],
                        "reward": v.get("reward"),
                        "success": v.get("success"),
                    }
                )
            return out

        return self.bus.call(f"listing the review items of job {self.job}", run)

    def item(self, item: str) -> dict[str, Any]:
        """One item with everything the review page shows; ItemNotFound if unknown."""
        gkey, index = self._parse(item)
        key = self.group_key(gkey)

        def run(r: redis.Redis):
            now = _now(r)
            return now, r.hmget(
                key, "group_id", "task_id", "verifier", "prompt", "deadline", "state", "size",
                f"s:{index}", f"v:{index}", f"r:{index}",
            )  # fmt: skip

        now, (gid, task, verifier, prompt, deadline, state, size, s, view, review) = self.bus.call(
            f"reading review item {item} of job {self.job}", run
        )
        if gid is None or s is None:
            raise ItemNotFound(f"no review item {item!r} in job {self.job} (never selected, or long gone)")
        status = _s(s)
        if status == "pending" and (state == b"released" or now >= float(deadline)):
            status = "expired"
        return {
            "item": item,
            "job_id": self.job,
            "group_id": gid.decode(),
            "task_id": _s(task) or "",
            "verifier": _s(verifier) or "",
            "index": index,
            "group_size": int(size or 0),
            "state": status,
            "deadline": float(deadline),
            "seconds_left": max(0.0, float(deadline) - now) if status == "pending" else 0.0,
            "prompt": _s(prompt) or "",
            **json.loads(view),
            "review": json.loads(review) if review else None,
        }

    def submit(self, item: str, review: Review) -> dict[str, Any]:
        """Record a review (atomic with the checks); raises ItemNotFound, ItemExpired or
        AlreadyReviewed. Returns ``{"item", "state", "group_complete", "duplicate"}``."""
        gkey, index = self._parse(item)
        key = self.group_key(gkey)
        answer = review.model_dump(mode="json")

        def body(p) -> dict[str, Any]:
            state, deadline, s, selected, previous = p.hmget(key, "state", "deadline", f"s:{index}", "selected", f"r:{index}")  # fmt: skip
            if state is None or s is None:
                raise ItemNotFound(
                    f"no review item {item!r} in job {self.job} (never selected, or long gone)"
                )
            if s == b"reviewed":
                old = json.loads(previous)
                if {k: old.get(k) for k in answer} == answer:
                    return {"item": item, "state": "reviewed", "group_complete": None, "duplicate": True}
                raise AlreadyReviewed(f"review item {item} was already reviewed ({old.get('verdict')})")
            now = _now(p)
            if s == b"expired" or state == b"released" or now >= float(deadline):
                raise ItemExpired(
                    f"review item {item} expired: its deadline passed {now - float(deadline):.0f}s ago and the "
                    "group went on without human feedback"
                )
            others = [j for j in json.loads(selected) if j != index]
            rest = p.hmget(key, [f"s:{j}" for j in others]) if others else []
            complete = all(x == b"reviewed" for x in rest)
            p.multi()
            p.hset(key, mapping={f"s:{index}": "reviewed", f"r:{index}": json.dumps({**answer, "at": now})})
            p.zrem(self.items_key, item)
            p.hincrby(self.stats_key, "items_reviewed", 1)
            p.hincrby(self.stats_key, f"items_{review.verdict}ed", 1)
            if complete:
                p.sadd(self.ready_key, gkey)
            p.execute()
            return {"item": item, "state": "reviewed", "group_complete": complete, "duplicate": False}

        return self._tx(f"submitting review item {item} of job {self.job}", key, body)

    def stats(self) -> dict[str, int]:
        """Counters, plus ``pending_items`` (open, deadline ahead) and ``parked_groups`` now."""

        def run(r: redis.Redis) -> dict[str, int]:
            now = _now(r)
            with r.pipeline(transaction=False) as p:
                p.hgetall(self.stats_key)
                p.zcount(self.items_key, f"({now}", "+inf")
                p.zcard(self.due_key)
                counters, open_items, parked = p.execute()
            out = {k.decode(): int(v) for k, v in counters.items()}
            return {**out, "pending_items": int(open_items), "parked_groups": int(parked)}

        return self.bus.call(f"reading the review counters of job {self.job}", run)
