"""Which policy weights a job's engines must run, kept in Redis next to the job's streams.

The learner records the version of every weight update it has delivered
(``record_published``). An engine replica that starts while its job is already running (a
replacement for one that died) would otherwise serve the model's initial weights until the
next update: instead it reads that version (``published_version``), refuses to sample or
score until it has received weights at least that new, and asks the learner to send them
again (``request_resend``); the learner checks for the request while it waits for data
(``take_resend_request``).

Keys: ``{prefix}:{job}:weights:version`` (an integer) and ``{prefix}:{job}:weights:resend``
(present while a resend is wanted).
"""

from __future__ import annotations

from distil.bus.client import Bus
from distil.bus.names import check_name


def _key(bus: Bus, job: str, what: str) -> str:
    return f"{bus.config.prefix}:{check_name('job id', job)}:weights:{what}"


def record_published(bus: Bus, job: str, version: int) -> None:
    key = _key(bus, job, "version")
    bus.call(f"recording weights version {version} in {key}", lambda r: r.set(key, int(version)))


def published_version(bus: Bus, job: str) -> int:
    """The last weights version the learner delivered to the job's engines (0: none yet)."""
    key = _key(bus, job, "version")
    raw = bus.call(f"reading {key}", lambda r: r.get(key))
    return int(raw) if raw is not None else 0


def request_resend(bus: Bus, job: str) -> None:
    key = _key(bus, job, "resend")
    bus.call(f"setting {key}", lambda r: r.set(key, 1))


def take_resend_request(bus: Bus, job: str) -> bool:
    """True (once) if an engine asked for the current weights since the last call."""
    key = _key(bus, job, "resend")

    def take(r) -> bool:
        with r.pipeline(transaction=True) as p:
            p.get(key)
            p.delete(key)
            wanted, _ = p.execute()
        return wanted is not None

    return bus.call(f"taking {key}", take)
