"""Every exception openheim raises.

All of them derive from :class:`OpenheimError`, and each says what was wrong and
what to do about it. Where a standard exception means the same thing, the class
also derives from it, so ``except TimeoutError`` or ``except ValueError`` keeps
working::

    OpenheimError
    ├── CoreMissingError (ImportError)        the compiled core is not installed
    ├── ConfigError (ValueError)              bad configuration or arguments
    ├── MailboxError
    │   ├── MailboxClosed                     put on a closed mailbox / get after drain
    │   │   └── ActorStopped                  send to a stopped actor
    │   ├── MailboxFull                       put_nowait with no room
    │   ├── MailboxEmpty                      get_nowait with nothing to read
    │   └── MailboxTimeout (TimeoutError)     a blocking wait ran out of time
    ├── SchedulerError                        a scheduler used the wrong way (wrong thread, ...)
    │   └── SchedulerClosed                   spawn / timer on a closed scheduler or loop
    ├── StateError
    │   ├── CorruptStateError (ValueError)    bytes fail checksum/structure checks
    │   ├── IncompatibleStateError (ValueError)  a format version this build cannot read
    │   └── VersionConflictError          a compare-and-set found another version
    │       └── SessionBusyError          another writer changed the session first
    ├── StorageError (OSError)                an OS-level write/fsync/rename failed
    ├── LogError
    │   ├── LogClosed (ValueError)            append to a closed LogWriter
    │   └── LogTimeout (TimeoutError)         waiting for a record to be durable ran out of time
    ├── StreamError
    │   ├── StreamClosed                      reading a finished token stream past its end
    │   ├── StreamDiscarded                   a token-stream offset that is no longer retained
    │   ├── StreamFailed                      the producer ended the stream with this message
    │   └── StreamTimeout (TimeoutError)      a blocking read waited for its whole timeout
    ├── ModelError                            a model call failed
    │   ├── ModelHTTPError                    the provider answered with an error status
    │   │   ├── AuthenticationError           401/403: missing or wrong API key
    │   │   ├── BadRequestError (ValueError)  400/404/422: the request was refused
    │   │   │   └── ContextLengthError        the prompt does not fit the context window
    │   │   ├── RateLimitError                429 after every retry (carries retry_after)
    │   │   └── ServerError                   5xx after every retry
    │   ├── ModelConnectionError (ConnectionError)  network failure after every retry / stream cut
    │   ├── ModelTimeout (TimeoutError)       one model call took longer than its timeout
    │   └── ModelResponseError                the model returned something unusable
    └── AgentError                            a run could not finish
        ├── MaxIterationsError                the tool loop hit max_iterations
        ├── OutputValidationError (ValueError)  the final answer failed validation after retries
        ├── ToolDefinitionError (TypeError)   a function cannot be made into a tool
        ├── ToolTimeout (TimeoutError)        a tool call took longer than its timeout
        ├── RunTimeout (TimeoutError)         the whole run took longer than its timeout
        ├── ApprovalError                     approving/rejecting an unknown or settled call
        ├── ToolArgumentsError (ValueError)   the model kept sending invalid tool arguments
        ├── ToolError                         raised by a tool: its message goes to the model
        ├── MCPConnectionError (ConnectionError)  an MCP server could not be started or reached
        └── StopRun                           raised by a tool: ends the run, re-raised to the caller

    OpenheimError (workflows)
    └── WorkflowError                         a workflow could not be defined or run
        ├── WorkflowDefinitionError (ValueError)  the graph or its state is invalid (before any run)
        ├── WorkflowStateError (ValueError)   a node returned updates the state cannot take
        ├── WorkflowStepError                 a node failed after its retries (cause attached)
        ├── WorkflowTimeout (TimeoutError)    a node or a run took longer than its timeout
        ├── WorkflowCancelled                 the run was cancelled
        ├── WorkflowBusyError                 another process is resuming the run
        ├── BudgetExceededError               a run used up its token, step or time budget
        ├── RunNotFoundError (KeyError)       no run (or approval) with this id in the store
        └── WorkflowApprovalError             deciding an unknown or already decided approval

    OpenheimError (actors)
    └── ActorError                            the actor runtime (openheim.runtime)
        ├── AskTimeout (TimeoutError)         an ask got no reply in time
        ├── ActorFailed                       a handler kept failing on a message (dead-lettered)
        └── MessageDropped                    a message dropped unhandled (overflow, stop)
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "ActorFailed",
    "ActorStopped",
    "AgentError",
    "ApprovalError",
    "AskTimeout",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ContextLengthError",
    "CoreMissingError",
    "CorruptStateError",
    "IncompatibleStateError",
    "LogClosed",
    "LogError",
    "LogTimeout",
    "MCPConnectionError",
    "MailboxClosed",
    "MailboxEmpty",
    "MailboxError",
    "MailboxFull",
    "MailboxTimeout",
    "MaxIterationsError",
    "MessageDropped",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelResponseError",
    "ModelTimeout",
    "OpenheimError",
    "OutputValidationError",
    "RateLimitError",
    "RunNotFoundError",
    "RunTimeout",
    "SchedulerClosed",
    "SchedulerError",
    "ServerError",
    "SessionBusyError",
    "StateError",
    "StopRun",
    "StorageError",
    "StreamClosed",
    "StreamDiscarded",
    "StreamError",
    "StreamFailed",
    "StreamTimeout",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "ToolTimeout",
    "VersionConflictError",
    "WorkflowApprovalError",
    "WorkflowBusyError",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowStateError",
    "WorkflowStepError",
    "WorkflowTimeout",
]


class OpenheimError(Exception):
    """Base class of every error openheim raises."""


class CoreMissingError(OpenheimError, ImportError):
    """The compiled core ``openheim._core`` could not be imported."""


class ConfigError(OpenheimError, ValueError):
    """A configuration value or argument is invalid."""


class MailboxError(OpenheimError):
    """Base class of mailbox errors."""


class MailboxClosed(MailboxError):
    """The mailbox is closed: no more puts, and every item has been read."""


class MailboxFull(MailboxError):
    """``put_nowait`` found the mailbox at its ``maxsize``."""


class MailboxEmpty(MailboxError):
    """``get_nowait`` found nothing to read."""


class MailboxTimeout(MailboxError, TimeoutError):
    """A blocking ``put``/``get`` waited for its whole timeout."""


class ActorStopped(MailboxClosed):
    """The actor was stopped (or its scheduler closed): it takes no more messages."""


class SchedulerError(OpenheimError):
    """A scheduler was used in a way it cannot honour, e.g. from the wrong thread."""


class SchedulerClosed(SchedulerError):
    """The scheduler (or its event loop) is closed: no new actors, timers or wake-ups."""


class StateError(OpenheimError):
    """Base class of errors about stored state."""


class CorruptStateError(StateError, ValueError):
    """Stored bytes are damaged: wrong magic, checksum mismatch, or truncated."""


class IncompatibleStateError(StateError, ValueError):
    """Stored bytes are intact but use a format version this build cannot read."""


class VersionConflictError(StateError):
    """A store write expected one version of a key and found another.

    ``key`` is the key, ``expected`` the version the writer gave (0: "must not
    exist") and ``actual`` the version found (0: absent). Re-read and retry.
    """

    def __init__(self, message: str, *, key: str = "", expected: int = 0, actual: int = 0) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual


class SessionBusyError(VersionConflictError):
    """Another process kept writing the same session; this run's messages were not added."""


class StorageError(OpenheimError, OSError):
    """An operating-system call (open, write, fsync, rename) failed."""


class LogError(OpenheimError):
    """Base class of append-only log (``LogWriter``) errors other than I/O failures."""


class LogClosed(LogError, ValueError):
    """The ``LogWriter`` is closed: it takes no more records."""


class LogTimeout(LogError, TimeoutError):
    """A wait for records to become durable ran out of time (they may still be written)."""


class StreamError(OpenheimError):
    """Base class of token-stream errors."""


class StreamClosed(StreamError):
    """The stream is finished and the reader has consumed everything in it."""


class ModelError(OpenheimError):
    """A model call failed. ``provider`` names the connector (``"openai"``, ...)."""

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class ModelHTTPError(ModelError):
    """The provider answered with an error status; ``body`` is its error message."""

    def __init__(
        self, message: str, *, provider: str = "", status_code: int = 0, body: str = ""
    ) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.body = body


class AuthenticationError(ModelHTTPError):
    """The API key is missing, wrong or not allowed (HTTP 401/403)."""


class BadRequestError(ModelHTTPError, ValueError):
    """The provider refused the request as invalid (HTTP 400/404/422)."""


class ContextLengthError(BadRequestError):
    """The conversation does not fit the model's context window."""


class RateLimitError(ModelHTTPError):
    """Still rate-limited (HTTP 429) after every retry; ``retry_after`` in seconds if given."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int = 429,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, body=body)
        self.retry_after = retry_after


class ServerError(ModelHTTPError):
    """The provider failed (HTTP 5xx) on every retry."""


class ModelConnectionError(ModelError, ConnectionError):
    """The provider could not be reached, or the connection dropped mid-stream."""


class ModelTimeout(ModelError, TimeoutError):
    """One model call took longer than its timeout."""


class ModelResponseError(ModelError):
    """The model's reply cannot be used (malformed JSON, unknown format, ...)."""


class AgentError(OpenheimError):
    """An agent run could not finish."""


class MaxIterationsError(AgentError):
    """The tool loop reached ``max_iterations`` without a final answer."""


class OutputValidationError(AgentError, ValueError):
    """The model's final answer failed validation on every allowed retry."""


class ToolDefinitionError(AgentError, TypeError):
    """A function cannot be turned into a tool (e.g. un-annotated parameters)."""


class ToolTimeout(AgentError, TimeoutError):
    """A tool call took longer than its timeout."""


class RunTimeout(AgentError, TimeoutError):
    """The whole agent run took longer than its timeout."""


class ApprovalError(AgentError):
    """Approving or rejecting a call that is unknown or already settled."""


class StreamDiscarded(StreamError):
    """A token-stream reader asked for text the buffer has already discarded."""


class StreamFailed(StreamError):
    """The producer ended the token stream with an error message (``fail("...")``)."""


class StreamTimeout(StreamError, TimeoutError):
    """A blocking token-stream read waited for its whole timeout."""


class ToolArgumentsError(AgentError, ValueError):
    """The model sent invalid arguments to a tool more often than the tool's ``retries``."""


class ToolError(AgentError):
    """Raise it in a tool to send its message back to the model as an error result.

    Any other exception does the same (with its type name prefixed and a log
    record); ``ToolError`` is for failures the tool expects, such as "no such
    city", where the plain message is what the model should read.
    """


class MCPConnectionError(AgentError, ConnectionError):
    """An MCP server could not be started, reached or initialized."""


class StopRun(AgentError):
    """Raise it in a tool to end the run at once.

    The run stops without another model call and ``agent.run`` (or the
    stream) re-raises this exception; nothing of the run is added to the
    session's history.
    """


# -- workflows -----------------------------------------------------------------------------


class WorkflowError(OpenheimError):
    """Base class of the errors of :mod:`openheim.workflow`."""


class WorkflowDefinitionError(WorkflowError, ValueError):
    """A workflow's graph or state type is invalid; raised before anything runs."""


class WorkflowStateError(WorkflowError, ValueError):
    """A node returned updates the workflow state cannot take (unknown field, wrong type,
    or two parallel nodes writing one field that has no reducer)."""


class WorkflowStepError(WorkflowError):
    """A node failed after all its retries; ``__cause__`` is its last exception.

    ``run_id`` and ``node`` say where; the run is recorded as failed and
    ``resume(run_id)`` tries the node again (finished nodes are not re-run).
    """

    def __init__(self, message: str, *, run_id: str = "", node: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.node = node


class WorkflowTimeout(WorkflowError, TimeoutError):
    """A workflow node or a whole run took longer than its timeout."""


class WorkflowCancelled(WorkflowError):
    """The workflow run was cancelled (``cancel(run_id)``); it cannot be resumed."""


class WorkflowBusyError(WorkflowError):
    """Another process holds the run's lease (it is resuming the run); wait, or retry
    once its lease has expired if that process died."""


class BudgetExceededError(WorkflowError):
    """A run used up its budget (model tokens, steps or active seconds)."""


class RunNotFoundError(WorkflowError, KeyError):
    """No workflow run or approval with this id exists in the workflow's store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WorkflowApprovalError(WorkflowError):
    """Deciding an approval that is not pending (already decided or expired)."""


# -- actors --------------------------------------------------------------------------------


class ActorError(OpenheimError):
    """Base class of the errors of :mod:`openheim.runtime`."""


class AskTimeout(ActorError, TimeoutError):
    """An ``ask`` got no reply within its timeout (the message may still be handled)."""


class ActorFailed(ActorError):
    """The actor's handler kept failing on a message; ``__cause__`` is its last exception.

    The message went to the runtime's dead-letter log (``rt.dead_letters()``).
    """

    def __init__(self, message: str, *, actor: str = "") -> None:
        super().__init__(message)
        self.actor = actor


class MessageDropped(ActorError):
    """The message was dropped unhandled: its actor's mailbox overflowed (policy
    ``drop_oldest``) or the actor stopped before handling it."""
