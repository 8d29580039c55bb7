from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepDone(_message.Message):
    __slots__ = ("step", "policy_version", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    step: int
    policy_version: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., policy_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class WeightsUpdated(_message.Message):
    __slots__ = ("policy_version", "step", "uri")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    step: int
    uri: str
    def __init__(self, policy_version: _Optional[int] = ..., step: _Optional[int] = ..., uri: _Optional[str] = ...) -> None: ...

class CheckpointWritten(_message.Message):
    __slots__ = ("step", "policy_version", "path")
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    step: int
    policy_version: int
    path: str
    def __init__(self, step: _Optional[int] = ..., policy_version: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class JobFinished(_message.Message):
    __slots__ = ("step", "final_checkpoint")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FINAL_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    step: int
    final_checkpoint: str
    def __init__(self, step: _Optional[int] = ..., final_checkpoint: _Optional[str] = ...) -> None: ...

class JobFailed(_message.Message):
    __slots__ = ("step", "error")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    step: int
    error: str
    def __init__(self, step: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class LearnerEvent(_message.Message):
    __slots__ = ("schema_version", "job_id", "event_id", "created_at", "step_done", "weights_updated", "checkpoint_written", "job_finished", "job_failed")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_DONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_UPDATED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    JOB_FINISHED_FIELD_NUMBER: _ClassVar[int]
    JOB_FAILED_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    job_id: str
    event_id: str
    created_at: float
    step_done: StepDone
    weights_updated: WeightsUpdated
    checkpoint_written: CheckpointWritten
    job_finished: JobFinished
    job_failed: JobFailed
    def __init__(self, schema_version: _Optional[int] = ..., job_id: _Optional[str] = ..., event_id: _Optional[str] = ..., created_at: _Optional[float] = ..., step_done: _Optional[_Union[StepDone, _Mapping]] = ..., weights_updated: _Optional[_Union[WeightsUpdated, _Mapping]] = ..., checkpoint_written: _Optional[_Union[CheckpointWritten, _Mapping]] = ..., job_finished: _Optional[_Union[JobFinished, _Mapping]] = ..., job_failed: _Optional[_Union[JobFailed, _Mapping]] = ...) -> None: ...
