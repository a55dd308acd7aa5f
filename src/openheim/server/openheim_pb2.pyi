from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunAgentRequest(_message.Message):
    __slots__ = ("agent", "input", "session")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    agent: str
    input: str
    session: str
    def __init__(self, agent: _Optional[str] = ..., input: _Optional[str] = ..., session: _Optional[str] = ...) -> None: ...

class AgentEvent(_message.Message):
    __slots__ = ("id", "type", "data", "run_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    type: str
    data: str
    run_id: str
    def __init__(self, id: _Optional[int] = ..., type: _Optional[str] = ..., data: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "data")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    data: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "messages", "input_tokens", "output_tokens", "requests")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    input_tokens: int
    output_tokens: int
    requests: int
    def __init__(self, id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., requests: _Optional[int] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class PendingCall(_message.Message):
    __slots__ = ("id", "tool", "arguments")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tool: str
    arguments: str
    def __init__(self, id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ...) -> None: ...

class Approvals(_message.Message):
    __slots__ = ("run_id", "status", "agent", "session", "pending")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    agent: str
    session: str
    pending: _containers.RepeatedCompositeFieldContainer[PendingCall]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., pending: _Optional[_Iterable[_Union[PendingCall, _Mapping]]] = ...) -> None: ...

class ApprovalDecision(_message.Message):
    __slots__ = ("id", "approved", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    approved: bool
    reason: str
    def __init__(self, id: _Optional[str] = ..., approved: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DecideApprovalsRequest(_message.Message):
    __slots__ = ("run_id", "decisions")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    decisions: _containers.RepeatedCompositeFieldContainer[ApprovalDecision]
    def __init__(self, run_id: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[ApprovalDecision, _Mapping]]] = ...) -> None: ...

class SubmitWorkflowRequest(_message.Message):
    __slots__ = ("workflow", "input", "run_id", "wait")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    input: str
    run_id: str
    wait: bool
    def __init__(self, workflow: _Optional[str] = ..., input: _Optional[str] = ..., run_id: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class WorkflowApproval(_message.Message):
    __slots__ = ("id", "run_id", "node", "payload", "requested_at", "deadline", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    node: str
    payload: str
    requested_at: float
    deadline: float
    data: str
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., node: _Optional[str] = ..., payload: _Optional[str] = ..., requested_at: _Optional[float] = ..., deadline: _Optional[float] = ..., data: _Optional[str] = ...) -> None: ...

class WorkflowRun(_message.Message):
    __slots__ = ("run_id", "status", "state", "pending", "error", "data")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    state: str
    pending: _containers.RepeatedCompositeFieldContainer[WorkflowApproval]
    error: str
    data: str
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., state: _Optional[str] = ..., pending: _Optional[_Iterable[_Union[WorkflowApproval, _Mapping]]] = ..., error: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("workflow", "run_id")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    run_id: str
    def __init__(self, workflow: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class StreamRunEventsRequest(_message.Message):
    __slots__ = ("workflow", "run_id", "after")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    run_id: str
    after: int
    def __init__(self, workflow: _Optional[str] = ..., run_id: _Optional[str] = ..., after: _Optional[int] = ...) -> None: ...

class WorkflowEvent(_message.Message):
    __slots__ = ("id", "type", "data", "run_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    type: str
    data: str
    run_id: str
    def __init__(self, id: _Optional[int] = ..., type: _Optional[str] = ..., data: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ("workflow", "approval_id", "approved", "by", "reason", "edits")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    approval_id: str
    approved: bool
    by: str
    reason: str
    edits: str
    def __init__(self, workflow: _Optional[str] = ..., approval_id: _Optional[str] = ..., approved: _Optional[bool] = ..., by: _Optional[str] = ..., reason: _Optional[str] = ..., edits: _Optional[str] = ...) -> None: ...

class ApproveResponse(_message.Message):
    __slots__ = ("approval_id", "run_id")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    run_id: str
    def __init__(self, approval_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...
