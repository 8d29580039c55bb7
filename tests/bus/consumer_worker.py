"""A consumer process for the SIGKILL test: takes a batch of 8, commits 3, then hangs mid-batch.

Run as ``python -m tests.bus.consumer_worker REDIS_URL JOB``. It sets ``{job}:worker-stuck``
in Redis when it is hanging with 5 entries delivered but uncommitted, so the test knows
when to kill it.
"""

from __future__ import annotations

import sys
import threading

from distil.bus import Bus
from tests.conftest import fast_bus_config


def main(url: str, job: str) -> None:
    with Bus(fast_bus_config(url)) as bus:
        stage = bus.consumer(job, "rollouts", "feedback", name="doomed", output="feedback")
        batch = []
        while len(batch) < 8:
            batch += stage.read(count=8 - len(batch), block_s=1.0)
        for d in batch[:3]:
            stage.commit(d, d.group)
        bus.redis.set(f"{job}:worker-stuck", len(batch) - 3)
        threading.Event().wait(120)  # "handling" the 4th entry when the SIGKILL arrives
        sys.exit("consumer_worker was not killed within 120 s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
