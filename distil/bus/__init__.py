"""distil.bus: the trajectory bus (Redis Streams) and its wire schema (``proto/distil/v1``).

Encode/decode (no Redis needed)::

    from distil.bus import Group, Response, encode_group, decode_group

Produce and consume::

    from distil.bus import Bus, BusConfig

    with Bus(BusConfig()) as bus:                     # REDIS_URL, else an embedded Redis
        bus.producer(job, "prompts").publish(group)
        consumer = bus.consumer(job, "rollouts", group="feedback", output="feedback")
        consumer.run(handler)                         # handler(group) -> group | None

See docs/bus.md for guarantees and settings.
"""

from distil.bus.client import Bus, DeadLetter
from distil.bus.config import BusConfig, EmbeddedRedisConfig
from distil.bus.consumer import Consumer, Delivery
from distil.bus.embedded import EmbeddedRedis, ensure_redis_url
from distil.bus.errors import BackpressureTimeout, BusError, BusUnavailable, SchemaError
from distil.bus.names import STAGES
from distil.bus.producer import Producer
from distil.bus.schema import (
    SCHEMA_VERSION,
    CheckpointWritten,
    Feedback,
    Group,
    JobFailed,
    JobFinished,
    LearnerEvent,
    Response,
    StageSpan,
    StepDone,
    TeacherScores,
    TestResult,
    WeightsUpdated,
    decode_event,
    decode_group,
    encode_event,
    encode_group,
    validate_group,
)
from distil.bus.staleness import is_stale, max_groups_in_flight, staleness

__all__ = [
    "SCHEMA_VERSION",
    "STAGES",
    "BackpressureTimeout",
    "Bus",
    "BusConfig",
    "BusError",
    "BusUnavailable",
    "CheckpointWritten",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "EmbeddedRedis",
    "EmbeddedRedisConfig",
    "Feedback",
    "Group",
    "JobFailed",
    "JobFinished",
    "LearnerEvent",
    "Producer",
    "Response",
    "SchemaError",
    "StageSpan",
    "StepDone",
    "TeacherScores",
    "TestResult",
    "WeightsUpdated",
    "decode_event",
    "decode_group",
    "encode_event",
    "encode_group",
    "ensure_redis_url",
    "is_stale",
    "max_groups_in_flight",
    "staleness",
    "validate_group",
]
