from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]
    DTYPE_INT16: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]

class TestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEST_STATUS_UNSPECIFIED: _ClassVar[TestStatus]
    TEST_STATUS_PASSED: _ClassVar[TestStatus]
    TEST_STATUS_FAILED: _ClassVar[TestStatus]
    TEST_STATUS_ERROR: _ClassVar[TestStatus]
    TEST_STATUS_TIMEOUT: _ClassVar[TestStatus]
    TEST_STATUS_SKIPPED: _ClassVar[TestStatus]
DTYPE_UNSPECIFIED: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
DTYPE_FLOAT16: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_UINT8: DType
DTYPE_BOOL: DType
DTYPE_INT16: DType
DTYPE_INT8: DType
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
TEST_STATUS_UNSPECIFIED: TestStatus
TEST_STATUS_PASSED: TestStatus
TEST_STATUS_FAILED: TestStatus
TEST_STATUS_ERROR: TestStatus
TEST_STATUS_TIMEOUT: TestStatus
TEST_STATUS_SKIPPED: TestStatus

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TestResult(_message.Message):
    __slots__ = ("name", "status", "fraction", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: TestStatus
    fraction: float
    message: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[TestStatus, str]] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("reward", "success", "tests", "feedback_text", "solution_text")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TEXT_FIELD_NUMBER: _ClassVar[int]
    SOLUTION_TEXT_FIELD_NUMBER: _ClassVar[int]
    reward: float
    success: bool
    tests: _containers.RepeatedCompositeFieldContainer[TestResult]
    feedback_text: str
    solution_text: str
    def __init__(self, reward: _Optional[float] = ..., success: _Optional[bool] = ..., tests: _Optional[_Iterable[_Union[TestResult, _Mapping]]] = ..., feedback_text: _Optional[str] = ..., solution_text: _Optional[str] = ...) -> None: ...

class TeacherScores(_message.Message):
    __slots__ = ("k", "top_ids", "top_logprobs")
    K_FIELD_NUMBER: _ClassVar[int]
    TOP_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    k: int
    top_ids: Tensor
    top_logprobs: Tensor
    def __init__(self, k: _Optional[int] = ..., top_ids: _Optional[_Union[Tensor, _Mapping]] = ..., top_logprobs: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("token_ids", "logprobs", "finish_reason", "truncated", "text", "feedback", "teacher")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    token_ids: Tensor
    logprobs: Tensor
    finish_reason: FinishReason
    truncated: bool
    text: str
    feedback: Feedback
    teacher: TeacherScores
    def __init__(self, token_ids: _Optional[_Union[Tensor, _Mapping]] = ..., logprobs: _Optional[_Union[Tensor, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., truncated: _Optional[bool] = ..., text: _Optional[str] = ..., feedback: _Optional[_Union[Feedback, _Mapping]] = ..., teacher: _Optional[_Union[TeacherScores, _Mapping]] = ...) -> None: ...

class StageSpan(_message.Message):
    __slots__ = ("stage", "start", "end")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    stage: str
    start: float
    end: float
    def __init__(self, stage: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("schema_version", "job_id", "group_id", "policy_version", "created_at", "attempt", "prompt_text", "prompt_token_ids", "responses", "task_id", "metadata", "spans", "sampling_temperature")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    job_id: str
    group_id: str
    policy_version: int
    created_at: float
    attempt: int
    prompt_text: str
    prompt_token_ids: Tensor
    responses: _containers.RepeatedCompositeFieldContainer[Response]
    task_id: str
    metadata: _containers.ScalarMap[str, str]
    spans: _containers.RepeatedCompositeFieldContainer[StageSpan]
    sampling_temperature: float
    def __init__(self, schema_version: _Optional[int] = ..., job_id: _Optional[str] = ..., group_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., created_at: _Optional[float] = ..., attempt: _Optional[int] = ..., prompt_text: _Optional[str] = ..., prompt_token_ids: _Optional[_Union[Tensor, _Mapping]] = ..., responses: _Optional[_Iterable[_Union[Response, _Mapping]]] = ..., task_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., spans: _Optional[_Iterable[_Union[StageSpan, _Mapping]]] = ..., sampling_temperature: _Optional[float] = ...) -> None: ...
