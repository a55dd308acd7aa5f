"""The structs on the HTTP wire: requests are decoded into them, responses encoded from them,
and ``/openapi.json`` is generated from them (``msgspec.json.schema_components``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from openheim.messages import Message, Usage

__all__ = [
    "ApprovalDecision",
    "Approvals",
    "ApprovalsRequest",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatTool",
    "ChatToolCall",
    "Choice",
    "CompletionMessage",
    "CompletionUsage",
    "ContentPart",
    "ErrorBody",
    "ErrorDetail",
    "FunctionCall",
    "FunctionDefinition",
    "Index",
    "JsonSchemaFormat",
    "ModelCard",
    "ModelList",
    "NamedToolChoice",
    "PendingCall",
    "ResponseFormat",
    "Run",
    "RunRequest",
    "Session",
    "SessionList",
    "Status",
    "StreamOptions",
]

# ---- errors and status --------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct):
    """Every error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class Status(msgspec.Struct):
    status: str


class Index(msgspec.Struct):
    """What ``GET /`` answers: where the API is described."""

    version: str
    name: str = "openheim"
    openapi: str = "/openapi.json"
    docs: str = "/docs"


# ---- chat completions: the request -------------------------------------------------------


class ContentPart(msgspec.Struct):
    """A part of a message's content; only ``text`` parts are supported."""

    type: str
    text: str = ""


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str = ""


class ChatToolCall(msgspec.Struct):
    """A tool call as the OpenAI API spells it (arguments are a JSON string)."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct):
    """A message of the conversation the client sends."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDefinition(msgspec.Struct):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class ChatTool(msgspec.Struct):
    """A tool the client runs itself: the model's calls to it are returned to the client."""

    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: NamedFunction
    type: Literal["function"] = "function"


class JsonSchemaFormat(msgspec.Struct):
    name: str = "final_result"
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct):
    """``model`` is a configured agent's name, or ``<provider>:<model>`` for a model listed
    in ``[providers.NAME].models``. With ``tools`` or a ``response_format`` the model answers
    the conversation as given and tool calls go back to the client; otherwise the agent runs,
    with its own instructions and tools, on the last user message."""

    model: str
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    tools: list[ChatTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None


# ---- chat completions: the answer --------------------------------------------------------


class CompletionMessage(msgspec.Struct):
    content: str | None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ChatToolCall] | UnsetType = UNSET


class Choice(msgspec.Struct):
    index: int
    message: CompletionMessage
    finish_reason: str
    logprobs: None = None


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    object: Literal["chat.completion"] = "chat.completion"


class ModelCard(msgspec.Struct):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "openheim"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"


# ---- agent runs and sessions -------------------------------------------------------------


class RunRequest(msgspec.Struct):
    """Run an agent on ``input``, in ``session`` when given (its history first).
    ``stream`` (or ``Accept: text/event-stream``) answers with the run's events as SSE."""

    input: str
    session: str | None = None
    stream: bool = False


class Run(msgspec.Struct):
    """A run: ``finished`` with its output, ``running``, or ``failed`` with its error."""

    status: Literal["running", "finished", "failed"]
    run_id: str
    output: Any = None
    stop_reason: Literal["final", "approval_required"] | UnsetType = UNSET
    usage: Usage | UnsetType = UNSET
    session: str | UnsetType | None = UNSET
    pending: list[dict[str, Any]] | UnsetType = UNSET
    error: dict[str, Any] | UnsetType | None = UNSET


class Session(msgspec.Struct):
    id: str
    messages: list[Message]
    usage: Usage


class SessionList(msgspec.Struct):
    sessions: list[str]


# ---- approvals ------------------------------------------------------------------------------


class PendingCall(msgspec.Struct):
    """A tool call waiting for a decision."""

    id: str
    tool: str
    arguments: dict[str, Any]


class Approvals(msgspec.Struct):
    """A run's pending tool calls; ``status`` is ``paused`` while there are any (else the
    run's status: ``running``, ``finished`` or ``failed``)."""

    run_id: str
    status: Literal["paused", "running", "finished", "failed"]
    agent: str | None = None
    session: str | None = None
    pending: list[PendingCall] = msgspec.field(default_factory=list)


class ApprovalDecision(msgspec.Struct, forbid_unknown_fields=True):
    """The decision on one pending call; a rejection's ``reason`` is shown to the model."""

    id: str
    approved: bool
    reason: str | None = None


class ApprovalsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A decision for every pending call of a paused run. ``stream`` (or ``Accept:
    text/event-stream``) answers with the continued run's events as SSE."""

    decisions: list[ApprovalDecision]
    stream: bool = False
